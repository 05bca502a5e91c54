"""Safety checkers other than linearizability, for chaos campaigns.

* :func:`check_durability`: every acknowledged write survives into the final state.
* :func:`check_lease_overlap`: no two nodes believed they were leader at the same instant.
* :func:`check_convergence`: after healing, every node applied the same log to the same state.
* :func:`check_fencing`: a fenced resource accepted strictly increasing tokens and lost no
  update.
* :func:`check_watch_streams`: every node's watch stream is a gapless, duplicate-free run of
  one and the same sequence of revisions.

Each returns a result object whose ``ok`` property is what a test asserts and whose
``summary()`` is what the assertion message shows, so a failing campaign says *what* broke.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping, Sequence

from .history import F, Operation, Outcome
from .linearizability import freeze

# --------------------------------------------------------------------------- durability


@dataclass(frozen=True)
class LostWrite:
    """A key whose final value no surviving write explains.

    ``acknowledged`` are the acknowledged writes that no later acknowledged write
    superseded: the final value had to come from one of them (or from a write concurrent
    with or after them).
    """

    key: str
    final: Any
    acknowledged: tuple[Operation, ...]


@dataclass(frozen=True)
class DurabilityResult:
    """Outcome of :func:`check_durability`."""

    lost: tuple[LostWrite, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no acknowledged write was lost."""
        return not self.lost

    def summary(self) -> str:
        """Human-readable list of lost writes."""
        if self.ok:
            return "no acknowledged write lost"
        return "\n".join(
            f"{lw.key!r}: final value {lw.final!r}, but acknowledged "
            + "; ".join(op.describe() for op in lw.acknowledged)
            for lw in self.lost)


def _written_value(op: Operation) -> Any:
    """The value a write or cas leaves in its register if it takes effect."""
    return op.value[1] if op.f is F.CAS else op.value


def _can_be_last(op: Operation, acked: Sequence[Operation]) -> bool:
    """False when an acknowledged write started after ``op`` completed (and so overwrote it)."""
    end: float = math.inf
    if op.outcome is not Outcome.UNKNOWN and op.complete_ns is not None:
        end = op.complete_ns
    return not any(other.invoke_ns > end for other in acked)


def check_durability(ops: Iterable[Operation], final_state: Mapping[str, Any]) -> DurabilityResult:
    """Check that every acknowledged write is present in ``final_state``.

    ``final_state`` is read after every client stopped (absent key = None). A key passes when
    its final value was written by some write/cas (``ok`` or ``unknown``) that no
    *acknowledged* write/cas started after it completed, i.e. one that can still be the last
    write; keys no acknowledged write touched are not judged. An overwritten write is thus
    not "lost", but a final value older than the last acknowledged write is.
    """
    writers: dict[str, list[Operation]] = {}
    for op in ops:
        if op.f is not F.READ and op.outcome is not Outcome.FAIL:
            writers.setdefault(op.key, []).append(op)
    lost = []
    for key, key_ops in sorted(writers.items()):
        acked = [op for op in key_ops if op.outcome is Outcome.OK]
        if not acked:
            continue
        candidates = [op for op in key_ops if _can_be_last(op, acked)]
        final = final_state.get(key)
        if not any(freeze(_written_value(op)) == freeze(final) for op in candidates):
            lost.append(LostWrite(key, final, tuple(op for op in candidates
                                                    if op.outcome is Outcome.OK)))
    return DurabilityResult(tuple(lost))


# --------------------------------------------------------------------------- leader leases


@dataclass(frozen=True)
class LeaseOverlap:
    """Two nodes that both believed they were leader during [start, end)."""

    node_a: str
    interval_a: tuple[int, float]
    node_b: str
    interval_b: tuple[int, float]

    @property
    def start(self) -> float:
        """First instant both nodes were leader."""
        return max(self.interval_a[0], self.interval_b[0])

    @property
    def end(self) -> float:
        """First instant after the overlap."""
        return min(self.interval_a[1], self.interval_b[1])

    @property
    def duration_ns(self) -> float:
        """Length of the overlap (inf if both intervals are still open)."""
        return self.end - self.start


@dataclass(frozen=True)
class LeaseResult:
    """Outcome of :func:`check_lease_overlap`."""

    overlaps: tuple[LeaseOverlap, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no two nodes were leader at once."""
        return not self.overlaps

    def summary(self) -> str:
        """Human-readable list of overlaps."""
        if self.ok:
            return "no overlapping leader intervals"
        return "\n".join(f"{o.node_a} {o.interval_a} and {o.node_b} {o.interval_b} overlap "
                         f"for {o.duration_ns} ns" for o in self.overlaps)


def check_lease_overlap(
        intervals: Mapping[str, Iterable[tuple[int, int | None]]]) -> LeaseResult:
    """Check that leader intervals of different nodes never overlap.

    ``intervals`` maps a node to its half-open [start, end) intervals of believing it is
    leader, all on one monotonic clock; ``end=None`` means "still leader when sampling
    stopped" (open-ended). Touching intervals ([a, b) and [b, c)) do not overlap.
    """
    flat = sorted((start, math.inf if end is None else end, node)
                  for node, spans in intervals.items() for start, end in spans)
    overlaps = []
    for i, (start_a, end_a, node_a) in enumerate(flat):
        if end_a < start_a:
            raise ValueError(f"interval of {node_a} ends before it starts: [{start_a}, {end_a})")
        for start_b, end_b, node_b in flat[i + 1:]:
            if start_b >= end_a:
                break
            if node_b != node_a and end_b > start_b:
                overlaps.append(LeaseOverlap(node_a, (start_a, end_a), node_b, (start_b, end_b)))
    return LeaseResult(tuple(overlaps))


# --------------------------------------------------------------------------- convergence


def state_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 of a canonical form of ``state``, independent of dict insertion order.

    For tests that fetch whole states from nodes; nodes that export their own state hash
    can be compared directly with :func:`check_convergence`.
    """
    return hashlib.sha256(repr(freeze(dict(state))).encode()).hexdigest()


@dataclass(frozen=True)
class ConvergenceResult:
    """Outcome of :func:`check_convergence`: nodes grouped by (applied index, state hash)."""

    groups: dict[tuple[int, Hashable], tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every node reported the same applied index and state hash."""
        return len(self.groups) <= 1

    def summary(self) -> str:
        """Which nodes disagree, and on what."""
        if self.ok:
            return "all nodes converged"
        return "nodes diverge: " + "; ".join(
            f"{', '.join(nodes)} at applied index {index} hash {digest}"
            for (index, digest), nodes in sorted(self.groups.items(), key=repr))


def check_convergence(nodes: Mapping[str, tuple[int, Hashable]]) -> ConvergenceResult:
    """Check that all nodes report the same (applied index, state hash).

    Call it after healing every fault and waiting for replication to settle; a node that
    is merely behind shows up as its own group.
    """
    groups: dict[tuple[int, Hashable], list[str]] = {}
    for node, (index, digest) in sorted(nodes.items()):
        groups.setdefault((index, digest), []).append(node)
    return ConvergenceResult({report: tuple(names) for report, names in groups.items()})


# --------------------------------------------------------------------------- fencing


@dataclass(frozen=True)
class FencedWrite:
    """One write attempt as logged by the fenced resource, in the order it was processed.

    ``before`` is the resource value the client based its update on (what it read under its
    lock) and ``after`` the value it asked to store; ``accepted`` is the resource's verdict
    on ``token``.
    """

    client: str
    token: int
    accepted: bool
    before: Any
    after: Any


@dataclass(frozen=True)
class FencingViolation:
    """An accepted write that broke fencing (``kind='token'``) or lost an update
    (``kind='lost-update'``); ``index`` is its position in the resource log."""

    kind: str
    index: int
    write: FencedWrite
    detail: str


@dataclass(frozen=True)
class FencingResult:
    """Outcome of :func:`check_fencing`."""

    violations: tuple[FencingViolation, ...] = ()
    accepted: int = 0

    @property
    def ok(self) -> bool:
        """True when tokens strictly increased and no update was lost."""
        return not self.violations

    def summary(self) -> str:
        """Human-readable list of violations."""
        if self.ok:
            return f"{self.accepted} accepted writes, fencing held"
        return "\n".join(f"[{v.index}] {v.kind}: {v.detail}" for v in self.violations)


def check_fencing(log: Sequence[FencedWrite], initial: Any = None) -> FencingResult:
    """Check a fenced resource's log for lock-safety violations.

    * Tokens of accepted writes must strictly increase (one write per lock grant): an
      accepted token not above the previous accepted one means a stale holder got through.
    * No lost update: each accepted write's ``before`` must equal the previous accepted
      write's ``after`` (``initial`` for the first), otherwise it was computed from stale
      data and overwrote an update.

    Rejected writes are the fence doing its job and are not violations.
    """
    violations = []
    last_token: int | None = None
    current = initial
    accepted = 0
    for index, write in enumerate(log):
        if not write.accepted:
            continue
        accepted += 1
        if last_token is not None and write.token <= last_token:
            violations.append(FencingViolation(
                "token", index, write,
                f"{write.client} token {write.token} accepted after token {last_token}"))
        if freeze(write.before) != freeze(current):
            violations.append(FencingViolation(
                "lost-update", index, write,
                f"{write.client} (token {write.token}) updated from {write.before!r} but the "
                f"resource held {current!r}"))
        last_token = write.token if last_token is None else max(last_token, write.token)
        current = write.after
    return FencingResult(tuple(violations), accepted)


# --------------------------------------------------------------------------- watch streams


@dataclass(frozen=True)
class WatchViolation:
    """Something wrong in ``node``'s watch stream at ``revision``."""

    node: str
    revision: int
    what: str

    def __str__(self) -> str:
        return f"{self.node} @ revision {self.revision}: {self.what}"


@dataclass(frozen=True)
class WatchResult:
    """Outcome of :func:`check_watch_streams`."""

    violations: tuple[WatchViolation, ...] = ()
    revisions: int = 0              # revisions in the reference sequence
    declared_gaps: int = 0          # CompactedError resumes (the node no longer held them)

    @property
    def ok(self) -> bool:
        """True when every stream is a gapless run of the same sequence."""
        return not self.violations

    def summary(self) -> str:
        """One line per violation (or a count of what was checked)."""
        if self.ok:
            return (f"{self.revisions} revisions, every stream gapless and equal "
                    f"({self.declared_gaps} declared compaction gaps)")
        return "\n".join(str(v) for v in self.violations)


def check_watch_streams(streams: Mapping[str, Sequence[Mapping[str, Any]]],
                        final_revision: int | None = None) -> WatchResult:
    """Check watch streams recorded on every node from revision 1.

    A stream is a list of records ``{"rev": R, "events": [[type, key, value], ...]}`` (one per
    revision, in the order received) or ``{"compacted": oldest}`` (the node answered a resume
    with CompactedError; the stream goes on at ``oldest``: a declared gap). Each stream must
    go 1, 2, 3, ... with no gap and no repeat except at declared gaps, every revision must
    hold at least one event, every node must report the same events for the same revision,
    and with ``final_revision`` every stream must reach it.
    """
    violations: list[WatchViolation] = []
    reference: dict[int, tuple[str, Any]] = {}
    declared = 0
    for node, records in streams.items():
        expected = 1
        for record in records:
            if "compacted" in record:
                oldest = int(record["compacted"])
                if oldest < expected:
                    violations.append(WatchViolation(node, oldest, "compaction marker goes "
                                                     f"back before {expected}"))
                declared += 1
                expected = max(expected, oldest)
                continue
            revision = int(record["rev"])
            if revision > expected:
                violations.append(WatchViolation(node, revision, f"gap: revisions {expected}.."
                                                 f"{revision - 1} never delivered"))
            elif revision < expected:
                violations.append(WatchViolation(node, revision, "delivered again or out of "
                                                 f"order (expected {expected})"))
            expected = max(expected, revision + 1)
            events = freeze(record["events"])
            if not events:
                violations.append(WatchViolation(node, revision, "a revision with no event"))
            seen = reference.setdefault(revision, (node, events))
            if seen[1] != events:
                violations.append(WatchViolation(node, revision, f"events {record['events']!r} "
                                                 f"differ from {seen[0]}'s {seen[1]!r}"))
        if final_revision is not None and expected <= final_revision:
            violations.append(WatchViolation(node, expected, "stream stops before the final "
                                             f"revision {final_revision}"))
    missing = [r for r in range(1, max(reference, default=0) + 1) if r not in reference]
    if missing:
        violations.append(WatchViolation("*", missing[0], f"{len(missing)} revisions no node "
                                         "delivered"))
    return WatchResult(tuple(violations), len(reference), declared)
