"""The event-history checker passes a correct history and names each kind of violation
(negative controls: a lost ack, a duplicate, a refused append stored, a partial append,
positions out of order, versions out of order, a projection that double-applied)."""

from __future__ import annotations

import dataclasses

from hastate.events import NewEvent, RecordedEvent
from hastate.events.streams import EventStreams
from hastate.testing.event_checks import AppendAttempt, check_events, check_projection
from hastate.testing.events import MachineBackend


def history() -> tuple[list[AppendAttempt], list[RecordedEvent]]:
    es = EventStreams(MachineBackend())
    attempts = []
    for i, stream in enumerate(["a", "b", "a"]):
        ids = [f"{i}-0", f"{i}-1"]
        result = es.append(stream, [NewEvent("T", {"n": 1}, id=x) for x in ids])
        attempts.append(AppendAttempt(stream, ids, "ok", result.positions))
    attempts.append(AppendAttempt("a", ["never"], "fail"))
    attempts.append(AppendAttempt("b", ["maybe"], "unknown"))
    return attempts, es.read_all()


def count(events) -> int:
    return sum(e.data["n"] for e in events)


def test_a_correct_history_passes() -> None:
    attempts, events = history()
    assert check_events(attempts, events) == []
    assert check_projection(events, 6, count) == []


def test_each_violation_is_named() -> None:
    attempts, events = history()
    lost = [e for e in events if e.id != "1-1"]
    assert any("lost" in p for p in check_events(attempts, lost))
    assert any("applied in part" in p for p in check_events(attempts, lost))
    after = events[-1].position + 1
    duplicated = events + [dataclasses.replace(events[0], position=after)]
    assert any("stored 2 times" in p for p in check_events(attempts, duplicated))
    refused = events + [RecordedEvent("a", 4, after, "T", {}, {}, "never")]
    assert any("was refused" in p for p in check_events(attempts, refused))
    reordered = [events[0], events[2], events[1], *events[3:]]
    assert any("increase strictly" in p for p in check_events(attempts, reordered))
    swapped = [dataclasses.replace(e, version=1 - e.version) if e.stream == "b" else e
               for e in events]
    assert any("versions" in p for p in check_events(attempts, swapped))
    assert check_projection(events, 7, count) != []    # one event applied twice
