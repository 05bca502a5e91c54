"""Safety checkers other than linearizability, for chaos campaigns.

* :func:`check_durability`: every acknowledged write survives into the final state.
* :func:`check_lease_overlap`: no two nodes believed they were leader at the same instant.
* :func:`check_convergence`: after healing, every node applied the same log to the same state.
* :func:`check_fencing`: a fenced resource accepted strictly increasing tokens and lost no
  update.

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
