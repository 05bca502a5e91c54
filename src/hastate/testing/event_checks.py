"""Checks of an event-stream history: what writers were told against what the store holds.

A writer records each append it tried (:class:`AppendAttempt`: stream, event ids, the
outcome it saw: ``ok`` with positions, ``fail`` = certainly not applied, ``unknown``). Given
the final ``$all``, :func:`check_events` lists every violation: a lost acknowledged event,
a duplicate, an event from an append refused for certain, an append applied in part,
positions that do not increase strictly (they have gaps: see :mod:`hastate.events.index`),
stream versions out of order. :func:`check_projection`
compares a projection with a replay of the events.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from hastate.events.records import RecordedEvent


@dataclass
class AppendAttempt:
    """One append as its writer saw it."""

    stream: str
    ids: list[str]
    outcome: str = "unknown"            # ok | fail | unknown
    positions: list[int] = field(default_factory=list)


def writer_append(writer: int, step: int, expected: Any) -> tuple[AppendAttempt, dict]:
    """Step ``step`` of test writer ``writer``: its own stream with ``expected`` on even steps,
    the shared stream with ANY on odd ones; 1-3 events whose ids are unique per step. Returns
    the attempt to record and the ``POST /v1/events/append`` body (retry it unchanged)."""
    own = step % 2 == 0
    stream = f"writer-{writer}" if own else "shared"
    attempt = AppendAttempt(stream, [f"w{writer}-{step}-{k}" for k in range(1 + step % 3)])
    body = {"stream": stream, "expected_version": expected if own else "any",
            "events": [{"type": "Tick", "data": {"w": writer, "i": step}, "id": x}
                       for x in attempt.ids]}
    return attempt, body


def check_events(attempts: Sequence[AppendAttempt], events: Sequence[RecordedEvent]) -> list[str]:
    """Every way ``events`` (the final ``$all``) contradicts what the writers were told."""
    problems: list[str] = []
    positions = [e.position for e in events]
    disorder = [(a, b) for a, b in zip(positions, positions[1:]) if b <= a]
    if disorder:
        problems.append(f"positions do not increase strictly: {disorder[:5]}...")
    counts = Counter(e.id for e in events)
    problems += [f"event {i} stored {n} times" for i, n in counts.items() if n > 1]
    by_id = {e.id: e for e in events}
    attempted = {i for a in attempts for i in a.ids}
    problems += [f"event {e.id} at {e.position} was never appended" for e in events
                 if e.id not in attempted]
    for a in attempts:
        stored = [by_id[i] for i in a.ids if i in by_id]
        if a.outcome == "fail" and stored:
            problems.append(f"append {a.ids} was refused but {len(stored)} of its events "
                            "are stored")
        if a.outcome == "ok" and len(stored) != len(a.ids):
            problems.append(f"acknowledged append {a.ids} lost "
                            f"{sorted(set(a.ids) - set(by_id))}")
        if stored and len(stored) != len(a.ids):
            problems.append(f"append {a.ids} applied in part")
        if a.outcome == "ok" and stored and [e.position for e in stored] != a.positions:
            problems.append(f"append {a.ids} acknowledged at {a.positions}, stored at "
                            f"{[e.position for e in stored]}")
        if stored and any(e.stream != a.stream for e in stored):
            problems.append(f"append {a.ids} to {a.stream!r} stored in another stream")
        if [e.position for e in stored] != list(range(stored[0].position,
                                                      stored[0].position + len(stored))) \
                if stored else False:
            problems.append(f"append {a.ids} is not contiguous in $all")
    versions: dict[str, list[int]] = defaultdict(list)
    for e in events:
        versions[e.stream].append(e.version)
    problems += [f"stream {s!r} versions {v[:20]}... are not 0, 1, 2, ... in position order"
                 for s, v in versions.items() if v != list(range(len(v)))]
    return problems


def check_projection(events: Sequence[RecordedEvent], projected: Any,
                     replay: Callable[[Sequence[RecordedEvent]], Any]) -> list[str]:
    """A projection must equal a replay of the events it has seen."""
    expected = replay(events)
    return [] if projected == expected else \
        [f"projection {projected!r} differs from the replay {expected!r}"]
