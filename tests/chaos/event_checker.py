"""Checks of a campaign's event workload: what writers were told against every node.

Inputs: the writers' attempts (``event_client_main.py``), each node's ``$all`` read
locally once the cluster converged (``[position, stream, version, id]`` rows), and each
node's subscription record (``event_workload.record_subscription``, the same rows). The
reference ``$all`` is the first node's. Violations:

* :func:`hastate.testing.event_checks.check_events` on the reference: an acknowledged event
  lost, a duplicate, an event of a refused append stored, an append applied in part or
  not contiguous, positions not strictly increasing, a stream's versions not 0, 1, 2, ...
* global order: another node's ``$all`` differs from the reference (first difference named);
* subscriptions: a node's subscription missed an event, delivered one twice, or delivered
  them out of order (compared with the reference, which it must equal exactly).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from hastate.events import RecordedEvent
from hastate.testing.event_checks import AppendAttempt, check_events

Row = Sequence[Any]          # [position, stream, version, id]


@dataclass
class EventVerdict:
    """Violations found, and what was checked."""

    violations: list[str] = field(default_factory=list)
    events: int = 0
    acknowledged: int = 0
    nodes: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


def _event(row: Row) -> RecordedEvent:
    position, stream, version, event_id = row
    return RecordedEvent(stream, version, position, "Tick", None, {}, event_id)


def _first_difference(a: Sequence[Row], b: Sequence[Row]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if list(x) != list(y):
            return f"at index {i}: {list(x)} != {list(y)}"
    return f"lengths {len(a)} != {len(b)}"


def _check_subscription(node: str, record: Sequence[Row], reference: Sequence[Row]) -> list[str]:
    if [list(r) for r in record] == [list(r) for r in reference]:
        return []
    problems = []
    delivered = Counter(r[3] for r in record)
    twice = [i for i, n in delivered.items() if n > 1]
    if twice:
        problems.append(f"{node}: subscription delivered {len(twice)} events twice, e.g. "
                        f"{twice[:3]}")
    missed = [r[3] for r in reference if r[3] not in delivered]
    if missed:
        problems.append(f"{node}: subscription missed {len(missed)} events, e.g. {missed[:3]}")
    positions = [r[0] for r in record]
    if positions != sorted(positions):
        problems.append(f"{node}: subscription delivered events out of position order")
    if not problems:
        problems.append(f"{node}: subscription differs from $all "
                        f"{_first_difference(record, reference)}")
    return problems


def check_event_run(attempts: Sequence[AppendAttempt], alls: dict[str, Sequence[Row]],
                    subscriptions: dict[str, Sequence[Row]]) -> EventVerdict:
    """Every way the nodes' ``$all`` and subscriptions contradict the writers' attempts."""
    verdict = EventVerdict(nodes=len(alls),
                           acknowledged=sum(len(a.ids) for a in attempts if a.outcome == "ok"))
    if not alls:
        verdict.violations.append("no node answered with its $all")
        return verdict
    first, *others = sorted(alls)
    reference = alls[first]
    verdict.events = len(reference)
    verdict.violations += check_events(attempts, [_event(r) for r in reference])
    for node in others:
        if [list(r) for r in alls[node]] != [list(r) for r in reference]:
            verdict.violations.append(f"{node}: $all differs from {first}'s "
                                      f"{_first_difference(alls[node], reference)}")
    for node, record in sorted(subscriptions.items()):
        verdict.violations += _check_subscription(node, record, reference)
    return verdict
