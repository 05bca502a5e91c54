"""Retention: truncation archives verifiable segments first, then removes the events; the
stream, $all and subscriptions read on; a changed segment is refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hastate.errors import CorruptDataError
from hastate.events import NewEvent
from hastate.events.retention import (EventArchive, archived_events, truncate,
                                      truncate_older_than)
from hastate.events.streams import EventStreams
from hastate.snapshots.stores.memory import MemoryStore
from hastate.testing.events import MachineBackend


def setup() -> tuple[EventStreams, EventArchive]:
    es = EventStreams(MachineBackend())
    for i in range(10):
        es.append("fills", [NewEvent("Filled", {"qty": Decimal(i) / 4}, id=f"f{i}")])
        es.append("other", [NewEvent("Other", id=f"o{i}")])
    return es, EventArchive(MemoryStore("retention"))


def test_truncate_archives_then_removes_and_reads_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    es, archive = setup()
    before = es.read_stream("fills")
    monkeypatch.setattr("hastate.events.retention.CHUNK", 3)     # several segments
    done = truncate(es, "fills", 7, archive)
    assert (done.removed, len(done.segments), done.first_version) == (7, 3, 7)
    assert [e.version for e in es.read_stream("fills")] == [7, 8, 9]
    assert archived_events(archive, es.layout.namespace, "fills") == before[:7]
    assert archived_events(archive, "events", "fills")[1].data == {"qty": Decimal("0.25")}
    everything = es.read_all()
    assert [e.id for e in everything if e.stream == "fills"] == ["f7", "f8", "f9"]
    assert len(everything) == 13
    result = es.append("fills", [NewEvent("Filled", id="f10")], expected_version=9)
    assert result.versions == [10] and result.positions[0] > everything[-1].position
    sub = iter(es.subscribe(0))
    assert [next(sub).position for _ in range(14)] == \
        [e.position for e in everything] + result.positions
    # truncating everything keeps the stream's version
    assert truncate(es, "fills", 100, archive).removed == 4
    assert es.read_stream("fills") == [] and es.stream_version("fills") == 10
    assert es.append("fills", [NewEvent("Filled")], expected_version=10).versions == [11]


def test_truncate_by_age(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(1000, 2000))
    monkeypatch.setattr("hastate.events.streams.time.time", lambda: float(next(clock)))
    es = EventStreams(MachineBackend())
    for i in range(6):
        es.append("s", [NewEvent("T", id=f"e{i}")])
    cutoff = es.read_stream("s")[4].recorded_at
    assert truncate_older_than(es, "s", cutoff, None).removed == 4
    assert [e.id for e in es.read_stream("s")] == ["e4", "e5"]


def test_a_changed_segment_is_refused() -> None:
    es, archive = setup()
    (name,) = truncate(es, "other", 5, archive).segments
    raw = archive.store.read(name)
    archive.store.write(name, raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(CorruptDataError, match="SHA-256"):
        archive.read_segment(name)
    with pytest.raises(ValueError, match="before_version"):
        truncate(es, "other", -1, archive)
