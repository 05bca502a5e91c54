"""Event streams against a pure-Python model: appends, expected versions, idempotency,
truncation, reads, and catch-up subscriptions that see exactly the model's global order.

The model counts the cluster revision as the state machine does (one per write that
changes something: an append, a truncation chunk), so it predicts every global position:
``revision * SLOTS + index in the append``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hastate.errors import DuplicateEventIdError, TxnTooLargeError, WrongExpectedVersionError
from hastate.events import ANY, NO_STREAM, STREAM_EXISTS, EventStreams, NewEvent
from hastate.events.index import SLOTS, EventIndex
from hastate.events.retention import CHUNK, EventArchive, archived_events, truncate
from hastate.snapshots.stores.memory import MemoryStore
from hastate.testing import wait_for
from hastate.testing.events import MachineBackend

STREAMS = ["a", "b", "c/d"]


@dataclass
class Model:
    """The semantics in plain Python: events by position, ids, each stream's last version,
    and the cluster revision (every write that changes something takes the next one)."""

    events: dict[int, tuple[str, int, str]] = field(default_factory=dict)  # pos -> s, v, id
    ids: dict[str, int] = field(default_factory=dict)                      # id -> position
    last: dict[str, int] = field(default_factory=dict)
    archived: dict[str, list[str]] = field(default_factory=dict)
    revision: int = 0

    @property
    def head(self) -> int:
        """The position of the last stored event (0: none)."""
        return max(self.events, default=0)

    def append(self, stream: str, ids: list[str], expected: object) -> tuple[str, object]:
        stored = [self.ids[i] for i in ids if i in self.ids]
        if stored:
            if len(stored) == len(ids) and all(self.events[p][0] == stream for p in stored) \
                    and stored == list(range(stored[0], stored[0] + len(stored))):
                return "replayed", stored
            return "duplicate", None
        current = self.last.get(stream, -1)
        ok = {ANY: True, NO_STREAM: current == -1, STREAM_EXISTS: current >= 0}[expected] \
            if isinstance(expected, str) else current == expected
        if not ok:
            return "wrong", current
        self.revision += 1
        positions = []
        for k, event_id in enumerate(ids):
            position = self.revision * SLOTS + k
            self.events[position] = (stream, current + 1 + k, event_id)
            self.ids[event_id] = position
            positions.append(position)
        self.last[stream] = current + len(ids)
        return "ok", positions

    def truncate(self, stream: str, before: int) -> int:
        gone = sorted((v, p, i) for p, (s, v, i) in self.events.items()
                      if s == stream and v < before)
        for _, position, event_id in gone:
            del self.events[position], self.ids[event_id]
        self.revision += -(-len(gone) // CHUNK)           # one transaction per chunk
        self.archived.setdefault(stream, []).extend(i for _, _, i in gone)
        return len(gone)

    def stream(self, stream: str) -> list[tuple[int, str]]:
        return sorted((v, i) for s, v, i in self.events.values() if s == stream)

    def all(self) -> list[tuple[int, str, int, str]]:
        return [(p, *self.events[p]) for p in sorted(self.events)]


def in_threads(work: Callable[[int], None], count: int) -> list[BaseException]:
    """Run ``work(0)`` .. ``work(count - 1)`` on threads of their own; the errors they raised."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


expected_st = st.one_of(st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS]), st.integers(0, 4))
append_st = st.tuples(st.just("append"), st.sampled_from(STREAMS), st.integers(1, 3),
                      expected_st, st.booleans())   # reuse an earlier append's ids (a retry)
truncate_st = st.tuples(st.just("truncate"), st.sampled_from(STREAMS), st.integers(0, 6))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(append_st, append_st, append_st, truncate_st), min_size=1,
                max_size=25))
def test_appends_truncations_and_reads_match_the_model(ops: list) -> None:
    backend = MachineBackend()
    es, model = EventStreams(backend), Model()
    archive = EventArchive(MemoryStore("model"))
    earlier: list[tuple[str, list[str]]] = []
    for counter, op in enumerate(ops):
        if op[0] == "truncate":
            _, stream, before = op
            assert truncate(es, stream, before, archive).removed == model.truncate(stream, before)
            continue
        _, stream, n, expected, retry = op
        if retry and earlier:
            stream_r, ids = earlier[counter % len(earlier)]
            stream = stream_r if counter % 3 else stream   # sometimes to another stream
        else:
            ids = [f"e{counter}-{k}" for k in range(n)]
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
    for stream in STREAMS:
        want = model.stream(stream)
        got = es.read_stream(stream)
        assert [(e.version, e.id) for e in got] == want
        assert es.stream_version(stream) == model.last.get(stream, -1)
        back = es.read_stream(stream, backwards=True, limit=2)
        assert [e.id for e in back] == [i for _, i in want][::-1][:2]
        if len(got) > 1:
            assert [e.id for e in es.read_stream(stream, got[1].version, limit=1)] == \
                [got[1].id]
        assert [e.id for e in archived_events(archive, "events", stream)] == \
            model.archived.get(stream, [])
    everything = es.read_all()
    assert [(e.position, e.stream, e.version, e.id) for e in everything] == model.all()
    assert es.head() == model.head
    assert all(e.metadata == {"correlation_id": "c"} and e.data == {"i": e.id}
               for e in everything)
    assert [e.id for e in es.read_all(filter=lambda e: e.stream == "b")] == \
        [i for _, i in model.stream("b")]
    if everything:                   # a subscription from 0 sees exactly $all, in order
        sub = es.subscribe(0)
        it = iter(sub)
        assert [next(it) for _ in everything] == everything
        sub.stop()
    backend.close()


def test_subscription_replays_then_goes_live_without_gap_or_repeat() -> None:
    backend = MachineBackend()
    es = EventStreams(backend)
    positions = [es.append(STREAMS[k % 3], [NewEvent("T", id=f"p{k}")]).positions[0]
                 for k in range(5)]
    seen: list[int] = []
    sub = es.subscribe(after=positions[2])
    done = threading.Event()

    def consume() -> None:
        for event in sub:
            seen.append(event.position)
            if len(seen) == 37:
                done.set()
                return

    thread = threading.Thread(target=consume)
    thread.start()
    for k in range(5, 40):
        positions += es.append(STREAMS[k % 3], [NewEvent("T", id=f"p{k}")]).positions
    assert done.wait(10)
    sub.stop()
    thread.join(5)
    assert seen == positions[3:]
    # a restarted subscriber resumes from its checkpoint
    again = es.subscribe(after=positions[-3])
    it = iter(again)
    assert [next(it).position, next(it).position] == positions[-2:]
    again.stop()
    # a stream subscription: only that stream, after a version
    stream_sub = es.subscribe_stream("b", after_version=10)
    it = iter(stream_sub)
    assert [(e.stream, e.version) for e in (next(it), next(it))] == [("b", 11), ("b", 12)]
    stream_sub.stop()
    backend.close()


def test_the_index_a_scan_builds_equals_the_one_the_apply_path_fed() -> None:
    """A namespace indexed live, through appends and truncations, equals a fresh scan of
    the same state, and one rebuilt after the state was replaced by a dump."""
    backend = MachineBackend()
    es = EventStreams(backend)
    es.head()                                     # indexed from the start: fed live
    for k in range(30):
        es.append(STREAMS[k % 3], [NewEvent("T", id=f"x{k}-{j}") for j in range(k % 4 + 1)])
        if k % 7 == 6:
            truncate(es, STREAMS[k % 3], 3 + k // 7, None)
    prefix = es.layout.event_prefix
    live, revision = backend.index.after(prefix, 0, 10_000)
    assert revision == backend.machine.revision
    scanned = EventIndex(backend.machine.scan, backend.machine.revision)
    assert scanned.after(prefix, 0, 10_000) == (live, revision)
    assert [p for p, _ in live] == [e.position for e in es.read_all()]
    assert all(b > a for (a, _), (b, _) in zip(live, live[1:]))
    backend.machine.load_body(backend.machine.to_body())     # a dump replaces the state
    assert backend.index.after(prefix, 0, 10_000) == (live, revision)
    backend.close()


def test_appends_to_different_streams_never_conflict() -> None:
    """Writers racing on distinct streams (reads slowed so they interleave) commit every
    append with its first transaction: no key is shared by appends to different streams."""
    backend = MachineBackend(read_delay=0.002)
    writers = [EventStreams(backend) for _ in range(4)]

    def write(w: int) -> None:
        for i in range(25):
            writers[w].append(f"own-{w}", [NewEvent("T", id=f"o{w}-{i}-{k}") for k in range(2)])

    assert in_threads(write, 4) == []
    assert backend.transactions == 100
    everything = writers[0].read_all()
    assert len(everything) == 200 and all(b.position > a.position
                                          for a, b in zip(everything, everything[1:]))
    backend.close()


def test_bad_appends_say_what_is_wrong() -> None:
    es = EventStreams(MachineBackend())
    with pytest.raises(ValueError, match="at least one event"):
        es.append("s", [])
    with pytest.raises(ValueError, match="expected_version"):
        es.append("s", [NewEvent("T")], expected_version=-3)
    with pytest.raises(ValueError, match="same event id twice"):
        es.append("s", [NewEvent("T", id="x"), NewEvent("T", id="x")])
    with pytest.raises(TxnTooLargeError, match="bytes"):
        es.append("s", [NewEvent("T", "x" * 200_000) for _ in range(10)])
    assert es.head() == 0


def test_writers_racing_on_one_replica_lose_no_event() -> None:
    backend = MachineBackend(read_delay=0.002)
    writers = [EventStreams(backend) for _ in range(4)]     # separate locks: they race

    def write(w: int) -> None:
        for i in range(50):
            stream = STREAMS[(w + i) % 3]
            writers[w].append(stream, [NewEvent("T", id=f"w{w}-{i}-{k}") for k in range(2)])

    assert in_threads(write, 4) == []
    everything = writers[0].read_all()
    assert all(b.position > a.position for a, b in zip(everything, everything[1:]))
    assert len(everything) == 400
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


def test_subscriptions_started_during_concurrent_appends_see_exactly_all_once() -> None:
    """Subscriptions consumed while four writers append to their own streams (each starting
    from a checkpoint taken mid-way, so it switches from reading to the watch while appends
    commit) deliver exactly ``$all`` after their checkpoint: once each, in order."""
    backend = MachineBackend(read_delay=0.0005)
    es = EventStreams(backend)
    per_writer = 40
    started = threading.Event()

    def write(w: int) -> None:
        for i in range(per_writer):
            es.append(f"w{w}", [NewEvent("T", id=f"w{w}-{i}-{k}") for k in range(1 + i % 3)])
            started.set()

    def consume(sub, out: list[int]) -> None:
        for event in sub:
            out.append(event.position)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in writers:
        thread.start()
    started.wait(5)
    subs = []
    for n in range(3):                     # checkpoints taken while the writers go on
        after = es.head(linearizable=False) if n else 0
        sub, out = es.subscribe(after), []
        consumer = threading.Thread(target=consume, args=(sub, out))
        consumer.start()
        subs.append((after, sub, out, consumer))
    for thread in writers:
        thread.join(30)
    everything = [e.position for e in es.read_all()]
    assert len(everything) == sum(1 + i % 3 for i in range(per_writer)) * 4
    for after, sub, out, consumer in subs:
        wait_for(lambda out=out: bool(out) and out[-1] == everything[-1], timeout=10,
                 what="the subscription reached the last event")
        sub.stop()
        consumer.join(5)
        assert out == [p for p in everything if p > after], f"subscription after {after}"
    backend.close()
