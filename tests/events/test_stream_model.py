"""Event streams against a pure-Python model: appends, expected versions, idempotency, reads,
and a catch-up subscription that sees exactly the model's global order."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hastate.errors import DuplicateEventIdError, WrongExpectedVersionError
from hastate.events import ANY, NO_STREAM, STREAM_EXISTS, EventStreams, NewEvent
from hastate.testing.events import MachineBackend

STREAMS = ["a", "b", "c/d"]


@dataclass
class Model:
    """Streams as lists of (id, type, data); $all as a list of (stream, version, id)."""

    streams: dict[str, list[str]] = field(default_factory=dict)
    all: list[tuple[str, int, str]] = field(default_factory=list)
    batches: dict[str, tuple[str, list[int]]] = field(default_factory=dict)

    def append(self, stream: str, ids: list[str], expected: object) -> tuple[str, object]:
        stored = [i for i in ids if i in self.batches]
        if stored:
            first = self.batches[ids[0]] if ids[0] in self.batches else None
            positions = [p for i in ids if i in self.batches for p in [self._pos(i)]]
            if len(stored) == len(ids) and first is not None and first[0] == stream and \
                    positions == list(range(positions[0], positions[0] + len(ids))):
                return "replayed", positions
            return "duplicate", None
        current = len(self.streams.get(stream, [])) - 1
        ok = {ANY: True, NO_STREAM: current == -1, STREAM_EXISTS: current >= 0}.get(
            expected, current == expected) if not isinstance(expected, int) else current == expected
        if not ok:
            return "wrong", current
        positions = []
        for i in ids:
            self.streams.setdefault(stream, []).append(i)
            self.all.append((stream, len(self.streams[stream]) - 1, i))
            self.batches[i] = (stream, [len(self.all)])
            positions.append(len(self.all))
        return "ok", positions

    def _pos(self, event_id: str) -> int:
        return self.batches[event_id][1][0]


expected_st = st.one_of(st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS]), st.integers(0, 4))
append_st = st.tuples(st.sampled_from(STREAMS), st.integers(1, 3), expected_st,
                      st.booleans())   # reuse the ids of an earlier append (a retry)


@settings(max_examples=150, deadline=None)
@given(st.lists(append_st, min_size=1, max_size=25))
def test_appends_and_reads_match_the_model(ops: list) -> None:
    backend = MachineBackend()
    es, model = EventStreams(backend), Model()
    earlier: list[tuple[str, list[str]]] = []
    counter = 0
    for stream, n, expected, retry in ops:
        if retry and earlier:
            stream_r, ids = earlier[counter % len(earlier)]
            stream = stream_r if counter % 3 else stream   # sometimes to another stream
        else:
            ids = [f"e{counter}-{k}" for k in range(n)]
        counter += 1
        outcome, detail = model.append(stream, ids, expected)
        events = [NewEvent("T", {"i": i}, {"correlation_id": "c"}, id=i) for i in ids]
        if outcome == "wrong":
            with pytest.raises(WrongExpectedVersionError) as err:
                es.append(stream, events, expected)
            assert err.value.actual_version == detail
        elif outcome == "duplicate":
            with pytest.raises(DuplicateEventIdError):
                es.append(stream, events, expected)
        else:
            result = es.append(stream, events, expected)
            assert result.positions == detail
            assert result.replayed == (outcome == "replayed")
            if outcome == "ok":
                earlier.append((stream, ids))
    # reads: every stream in version order, $all in position order, versions gapless
    for stream in STREAMS:
        got = es.read_stream(stream)
        assert [e.id for e in got] == model.streams.get(stream, [])
        assert [e.version for e in got] == list(range(len(got)))
        assert es.stream_version(stream) == len(got) - 1
        back = es.read_stream(stream, backwards=True, limit=2)
        assert [e.id for e in back] == model.streams.get(stream, [])[::-1][:2]
        if len(got) > 1:
            assert [e.id for e in es.read_stream(stream, 1, limit=1)] == [got[1].id]
    everything = es.read_all()
    assert [(e.stream, e.version, e.id) for e in everything] == model.all
    assert [e.position for e in everything] == list(range(1, len(model.all) + 1))
    assert es.head() == len(model.all)
    assert all(e.metadata == {"correlation_id": "c"} and e.data == {"i": e.id}
               for e in everything)
    only_b = es.read_all(filter=lambda e: e.stream == "b")
    assert [e.id for e in only_b] == model.streams.get("b", [])
    backend.close()


def test_subscription_replays_then_goes_live_without_gap_or_repeat() -> None:
    backend = MachineBackend()
    es = EventStreams(backend)
    for k in range(5):
        es.append(STREAMS[k % 3], [NewEvent("T", id=f"p{k}")])
    seen: list[int] = []
    sub = es.subscribe(after=2)
    done = threading.Event()

    def consume() -> None:
        for event in sub:
            seen.append(event.position)
            if event.position == 40:
                done.set()
                return

    thread = threading.Thread(target=consume)
    thread.start()
    for k in range(5, 40):
        es.append(STREAMS[k % 3], [NewEvent("T", id=f"p{k}")])
    assert done.wait(10)
    sub.stop()
    thread.join(5)
    assert seen == list(range(3, 41))
    # a restarted subscriber resumes from its checkpoint
    again = es.subscribe(after=38)
    it = iter(again)
    assert [next(it).position, next(it).position] == [39, 40]
    again.stop()
    # a stream subscription: only that stream, after a version
    stream_sub = es.subscribe_stream("b", after_version=10)
    it = iter(stream_sub)
    assert [(e.stream, e.version) for e in (next(it), next(it))] == [("b", 11), ("b", 12)]
    stream_sub.stop()
    backend.close()


def test_bad_appends_say_what_is_wrong() -> None:
    es = EventStreams(MachineBackend())
    with pytest.raises(ValueError, match="at least one event"):
        es.append("s", [])
    with pytest.raises(ValueError, match="expected_version"):
        es.append("s", [NewEvent("T")], expected_version=-3)
    with pytest.raises(ValueError, match="same event id twice"):
        es.append("s", [NewEvent("T", id="x"), NewEvent("T", id="x")])


def test_writers_racing_on_one_replica_lose_no_event_and_leave_no_gap() -> None:
    backend = MachineBackend(read_delay=0.002)
    writers = [EventStreams(backend) for _ in range(4)]     # separate locks: they race
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for i in range(50):
                stream = STREAMS[(w + i) % 3]
                writers[w].append(stream, [NewEvent("T", id=f"w{w}-{i}-{k}") for k in range(2)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    everything = writers[0].read_all()
    assert [e.position for e in everything] == list(range(1, 401))
    assert sorted(e.id for e in everything) == sorted(f"w{w}-{i}-{k}" for w in range(4)
                                                      for i in range(50) for k in range(2))
    for stream in STREAMS:
        assert [e.version for e in writers[1].read_stream(stream)] == \
            list(range(sum(e.stream == stream for e in everything)))
    for w in range(4):   # each batch is contiguous: atomic
        for i in range(50):
            first, second = (e for e in everything if e.id.startswith(f"w{w}-{i}-"))
            assert second.position == first.position + 1
    assert backend.transactions > 200, "the writers never raced (no failed compare)"
