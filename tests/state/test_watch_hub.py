"""The watch hub on its own: ordering, catch-up, compaction, overflow, progress, reset."""

from __future__ import annotations

import threading

import pytest

from hastate.errors import CompactedError, WatchCancelledError, WatchOverflowError
from hastate.state.codec import Command, encode_value
from hastate.state.history import History
from hastate.state.machine import ReplicatedState
from hastate.state.watch import WatchHub, run_callback


class Node:
    """A state machine feeding a hub, applied at consecutive log indexes."""

    def __init__(self, history: int = 100, buffer: int = 1000) -> None:
        self.machine = ReplicatedState()
        self.hub = WatchHub(history, buffer)
        self.machine.add_change_listener(self.hub)
        self.index = 0

    def put(self, **kv: object) -> int:
        self.index += 1
        cmd = Command(op="update", values={k: encode_value(k, v) for k, v in kv.items()})
        return self.machine.apply_at(self.index, cmd.encode())[1]

    def delete(self, *keys: str) -> int:
        self.index += 1
        return self.machine.apply_at(self.index, Command(op="delete", keys=keys).encode())[1]


def drain(watcher) -> list[tuple]:
    out = []
    while (event := watcher.get(timeout=0)) is not None:
        out.append((event.type, event.key, event.revision, event.value))
    return out


def test_events_in_revision_order_with_prefix_and_prev_value() -> None:
    node = Node()
    node.put(**{"o/1": 1, "x": 0})
    watcher = node.hub.watch("o/", 1, prev_value=True)
    node.put(**{"o/1": 2})
    node.delete("o/1", "x")
    events = []
    while (event := watcher.get(timeout=0)) is not None:
        events.append(event)
    assert [(e.type, e.key, e.revision, e.value, e.prev_value) for e in events] == [
        ("put", "o/1", 1, 1, None), ("put", "o/1", 2, 2, 1), ("delete", "o/1", 3, None, 2)]
    assert (events[1].create_revision, events[1].version) == (1, 2)


def test_default_start_is_now_and_a_future_start_waits_for_its_revision() -> None:
    node = Node()
    node.put(a=1)
    now, future = node.hub.watch(), node.hub.watch(start_revision=3)
    node.put(a=2)
    node.put(a=3)
    assert drain(now) == [("put", "a", 2, 2), ("put", "a", 3, 3)]
    assert drain(future) == [("put", "a", 3, 3)]


def test_catch_up_longer_than_a_chunk_then_live_without_gap_or_duplicate() -> None:
    node = Node(history=2000, buffer=5)
    for i in range(700):
        node.put(k=i)
    watcher = node.hub.watch("", 1)          # catches up on its own thread, buffer unused
    seen = [e[2] for e in drain(watcher)]
    for i in range(3):
        node.put(k=i)
    seen += [e[2] for e in drain(watcher)]
    assert seen == list(range(1, 704))


def test_start_before_the_history_is_compacted_error_naming_the_oldest() -> None:
    node = Node(history=10)
    for i in range(25):
        node.put(k=i)
    with pytest.raises(CompactedError) as info:
        node.hub.watch("", 15)
    assert info.value.oldest_revision == 16 and info.value.requested == 15
    assert [e[2] for e in drain(node.hub.watch("", 16))] == list(range(16, 26))


def test_a_slow_watcher_is_cancelled_after_its_buffer_others_keep_up() -> None:
    node = Node(buffer=3)
    slow, fast = node.hub.watch(), node.hub.watch(buffer=100)
    for i in range(10):
        node.put(k=i)                        # never blocks, whatever the watchers do
    delivered = []
    with pytest.raises(WatchOverflowError) as info:
        while True:                           # what it buffered comes first, then the error
            delivered.append(slow.get(timeout=0).revision)
    assert delivered == [1, 2, 3] and info.value.next_revision == 4
    assert [e[2] for e in drain(fast)] == list(range(1, 11))
    assert len(node.hub) == 1


def test_progress_event_promises_every_later_event_is_newer() -> None:
    node = Node()
    node.put(a=1)
    watcher = node.hub.watch("b/", progress_interval=0.01)
    node.put(a=2)                             # not for this watcher
    event = watcher.get()
    assert (event.type, event.revision) == ("progress", 2)
    node.put(**{"b/1": 1})
    assert drain(watcher)[0][2] == 3


def test_a_loaded_dump_brings_its_history_and_compacts_only_older_starts() -> None:
    node = Node()
    node.put(a=1)
    behind, ahead = node.hub.watch("", 2), node.hub.watch("", 9)
    other = Node(history=4)
    for i in range(7):
        other.put(a=i)
    body = other.machine.to_body()                       # a dump at revision 7
    assert [rev for rev, _ in body["history"]] == [4, 5, 6, 7]
    node.machine.load_body(body)                         # installed on this node
    with pytest.raises(CompactedError, match="oldest revision it still holds is 4"):
        behind.get(timeout=0)
    node.index = 20
    node.put(a=8)
    node.put(a=9)
    assert [e[2] for e in drain(ahead)] == [9]
    assert node.hub.oldest_revision == 4
    assert [e[3] for e in drain(node.hub.watch("", 4))] == [3, 4, 5, 6, 8, 9]


def test_a_watcher_behind_a_loaded_dump_catches_up_from_its_history() -> None:
    node = Node()
    node.put(a=1)
    live = node.hub.watch("", 2)                          # waiting for revision 2
    other = Node()
    for i in range(5):
        other.put(a=i)
    node.machine.load_body(other.machine.to_body())
    node.index = 10
    node.put(a=5)
    assert [(e[2], e[3]) for e in drain(live)] == [(2, 1), (3, 2), (4, 3), (5, 4), (6, 5)]


def test_a_body_without_history_compacts_everything_before_it() -> None:
    node = Node()
    node.put(a=1)
    watcher = node.hub.watch("", 2)
    other = Node()
    for i in range(3):
        other.put(a=i)
    body = other.machine.to_body()
    del body["history"]                                   # a dump written before histories
    node.machine.load_body(body)
    with pytest.raises(CompactedError, match="oldest revision it still holds is 4"):
        watcher.get(timeout=0)


def test_callback_form_and_close() -> None:
    node = Node()
    got, errors, done = [], [], threading.Event()
    watcher = node.hub.watch()
    thread = run_callback(watcher, got.append, lambda exc: (errors.append(exc), done.set()))
    node.put(a=1)
    node.put(a=2)
    node.hub.close()
    assert done.wait(10)
    thread.join(10)
    assert [e.revision for e in got] == [1, 2]
    assert isinstance(errors[0], WatchCancelledError) and "start_revision=3" in str(errors[0])
    with pytest.raises(WatchCancelledError, match="stopped"):
        node.hub.watch()


def test_cancel_ends_iteration() -> None:
    node = Node()
    watcher = node.hub.watch()
    node.put(a=1)
    seen = []
    for event in watcher:
        seen.append(event.revision)
        watcher.cancel()
    assert seen == [1] and len(node.hub) == 0


def test_history_export_keeps_the_newest_revisions_within_the_byte_cap() -> None:
    from hastate.state.history import Change
    history = History(10)
    for revision in range(1, 6):
        history.append(revision, [Change("put", "k", revision, b"x" * 100, 1, revision, None)])
    assert [r for r, _ in history.export(max_bytes=250)] == [4, 5]
    assert [r for r, _ in history.export(max_bytes=10)] == [5]       # always the newest
    restored = History(10)
    restored.restore(7, history.export(max_bytes=250))
    assert (restored.oldest, restored.last) == (4, 7)


def test_history_keeps_the_newest_revisions_and_validates() -> None:
    history = History(3)
    for revision in (1, 2, 5, 6, 7):
        history.append(revision, ())
    assert history.oldest == 3 and [r for r, _ in history.since(3, 10)] == [5, 6, 7]
    with pytest.raises(ValueError, match="not after 7"):
        history.append(7, ())
    with pytest.raises(ValueError, match=">= 1"):
        History(0)


def test_bad_watch_arguments_are_named() -> None:
    hub = WatchHub()
    with pytest.raises(ValueError, match="start_revision must be an int >= 1"):
        hub.watch("", 0)
    with pytest.raises(TypeError, match="prefix must be a str"):
        hub.watch(b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="progress_interval"):
        hub.watch(progress_interval=0)


def test_history_byte_cap_evicts_the_oldest_values_but_keeps_the_newest_revision() -> None:
    from hastate.state.history import Change
    history = History(100, max_bytes=250)
    for revision in range(1, 6):
        history.append(revision, [Change("put", "k", revision, b"x" * 100, revision, 1, None)])
    assert history.oldest == 4 and history.bytes == 200
    history.append(6, [Change("put", "k", 6, b"y" * 1000, 6, 1, None)])
    assert history.oldest == 6 and [r for r, _ in history.since(6, 10)] == [6]
