"""Watch and transactions end to end: instance-1 embedded here, instance-2/3 real processes."""

from __future__ import annotations

import signal

import pytest

from hastate import StateManager
from hastate.errors import CompactedError, WatchCancelledError, WatchOverflowError
from hastate.state.dump import decode_dump
from hastate.state.txn import get, missing, mod_revision, put, value
from hastate.testing import BackgroundWriter, wait_for

pytestmark = pytest.mark.integration


def collect(watcher, until_revision: int, timeout: float = 30.0) -> list:
    """Events of ``watcher`` up to ``until_revision`` (fails the test after ``timeout``)."""
    events = []
    while not events or events[-1].revision < until_revision:
        event = watcher.get(timeout=timeout)
        assert event is not None, f"no event after {events[-1:]} (waiting for {until_revision})"
        events.append(event)
    while (event := watcher.get(timeout=0)) is not None:   # the rest of the last revision
        events.append(event)
    return events


def acked(writer: BackgroundWriter) -> dict[str, int]:
    """key -> value of every write ``writer`` got acknowledged."""
    return {f"{writer.prefix}{i}": i for i in writer.acked}


def assert_exactly_once_in_order(events: list, start: int, end: int,
                                 written: dict[str, int]) -> None:
    """One put per revision start..end (every key written once), each acknowledged write
    among them exactly once with its value."""
    assert [e.revision for e in events] == list(range(start, end + 1))
    keys = [e.key for e in events]
    assert len(keys) == len(set(keys)), "a change was delivered twice"
    assert all(e.type == "put" for e in events)
    got = {e.key: e.value for e in events}
    assert {k: got.get(k) for k in written} == written


def test_follower_watcher_sees_every_change_once_in_order_while_the_leader_is_killed(
        cluster) -> None:
    cluster.make_leader("instance-2")
    start = cluster.sm.revision() + 1
    watcher = cluster.sm.watch("w", start)
    with BackgroundWriter(cluster.sm, prefix="w") as writer:
        wait_for(lambda: len(writer.acked) >= 30, timeout=30)
        cluster.kill("instance-2", signal.SIGKILL)
        wait_for(lambda: cluster.sm.leader() in ("instance-1", "instance-3"), timeout=30)
        before = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= before + 30, timeout=30)
    _, end = cluster.sm.get_state(with_revision=True)
    events = collect(watcher, end)
    assert_exactly_once_in_order(events, start, end, acked(writer))


def test_watcher_resumes_after_its_own_node_restarts(cluster) -> None:
    cluster.make_leader("instance-2")
    start = cluster.sm.revision() + 1
    watcher = cluster.sm.watch("w", start)
    with BackgroundWriter(cluster.sm, prefix="w") as writer:
        wait_for(lambda: len(writer.acked) >= 20, timeout=30)
    seen = collect(watcher, cluster.sm.revision())
    cluster.sm.stop()                                   # the watcher's node goes down
    with pytest.raises(WatchCancelledError, match=f"start_revision={seen[-1].revision + 1}"):
        while True:
            seen.append(watcher.get(timeout=5))
    # The rest of the cluster moves on while it is down.
    for i in range(1000, 1020):
        code, reply = cluster.post("instance-2", "/v1/txn",
                                   {"success": [{"op": "put", "key": f"w{i}", "value": i}]})
        assert code == 200 and reply["succeeded"], reply
    cluster.start_embedded(http=False)                  # restart from its data_dir
    cluster.sm.wait_ready(30)
    resumed = cluster.sm.watch("w", seen[-1].revision + 1)
    with BackgroundWriter(cluster.sm, prefix="w-after-") as writer2:
        wait_for(lambda: len(writer2.acked) >= 20, timeout=30)
    _, end = cluster.sm.get_state(with_revision=True)
    events = seen + collect(resumed, end)
    written = {**acked(writer), **acked(writer2), **{f"w{i}": i for i in range(1000, 1020)}}
    assert_exactly_once_in_order(events, start, end, written)


def test_compacted_start_revision_names_the_oldest_held(cluster) -> None:
    cluster.sm.stop()
    cluster.sm = StateManager.from_config(cluster.config_path, "instance-1", watch_history=5)
    cluster.sm.start(wait_ready=30)
    for i in range(12):
        cluster.sm.save_state({"c": i})
    latest = cluster.sm.revision()
    with pytest.raises(CompactedError) as info:
        cluster.sm.watch(start_revision=latest - 5)
    assert info.value.oldest_revision == latest - 4
    events = collect(cluster.sm.watch(start_revision=latest - 4), latest)
    assert [e.value for e in events] == list(range(7, 12))


def test_slow_consumer_is_cancelled_while_the_others_keep_up(cluster) -> None:
    start = cluster.sm.revision() + 1
    slow = cluster.sm.watch("s/", buffer=5)
    fast = [cluster.sm.watch("s/") for _ in range(3)]
    for i in range(40):
        cluster.sm.save_state({f"s/{i % 4}": i})
    for watcher in fast:
        assert [e.value for e in collect(watcher, start + 39)] == list(range(40))
    delivered = []
    with pytest.raises(WatchOverflowError) as info:
        while True:
            delivered.append(slow.get(timeout=5).value)
    assert delivered == list(range(5)) and info.value.next_revision == start + 5


def test_transaction_from_a_follower_is_atomic_and_returns_its_revision(cluster) -> None:
    cluster.make_leader("instance-3")
    rev = cluster.sm.save_state({"pos/X": {"qty": 2}, "pnl": 0, "model": "v1"})
    watcher = cluster.sm.watch(start_revision=rev + 1, prev_value=True)
    result = cluster.sm.transaction(
        [mod_revision("pos/X") == rev, value("model") == "v1", missing("nope")],
        [put("pnl", 15), put("model", "v2"), get("pos/X")], [get("pos/X")])
    assert result.succeeded and result.revision == rev + 1
    assert result.responses[2].value == {"qty": 2} and result.responses[2].mod_revision == rev
    again = cluster.sm.transaction([mod_revision("pos/X") == rev - 1], [put("pnl", 99)],
                                   [get("pnl")])
    assert not again.succeeded and again.revision == rev + 1 and again.responses[0].value == 15
    events = collect(watcher, rev + 1)
    assert [(e.key, e.value, e.prev_value, e.revision) for e in events] == [
        ("pnl", 15, 0, rev + 1), ("model", "v2", "v1", rev + 1)]
    state = cluster.state("instance-2")
    assert state["state"]["pnl"] == 15 and state["state"]["model"] == "v2"


def test_linearizable_watch_on_a_follower_starts_after_every_acknowledged_write(cluster) -> None:
    cluster.make_leader("instance-2")
    code, reply = cluster.post("instance-3", "/v1/txn",
                               {"success": [{"op": "put", "key": "lin", "value": 1}]})
    assert code == 200, reply
    watcher = cluster.sm.watch("lin", linearizable=True)
    cluster.sm.save_state({"lin": 2})
    event = watcher.get(timeout=30)
    assert (event.value, event.revision) == (2, reply["revision"] + 1)


def test_watcher_resumes_from_before_the_dump_of_its_restarted_node(cluster) -> None:
    """Dumps carry the watch history: a resume older than the restarted node's dump works."""
    cluster.sm.stop()
    cluster.sm = StateManager.from_config(cluster.config_path, "instance-1",
                                          log_compaction_entries=20)
    cluster.sm.start(wait_ready=30)
    start = cluster.sm.revision() + 1
    for i in range(60):
        cluster.sm.save_state({f"d{i}": i})
    end = cluster.sm.revision()
    dump = cluster.sm.spec.data_dir / "state.dump"

    def dumped_revision() -> int:
        return decode_dump(dump.read_bytes(), source=str(dump))[1]["state"]["revision"] \
            if dump.exists() else 0

    wait_for(lambda: dumped_revision() > start + 10, timeout=30)
    cluster.sm.stop()
    assert dumped_revision() > start + 10          # the replay alone could not serve start
    cluster.sm = StateManager.from_config(cluster.config_path, "instance-1")
    cluster.sm.start(wait_ready=30)
    assert cluster.sm.engine.watch_hub.oldest_revision <= start < end
    events = collect(cluster.sm.watch("d", start), end)
    assert [(e.key, e.value) for e in events] == [(f"d{i}", i) for i in range(60)]
