"""The configuration follows the log: it changes when an entry is appended, is undone when
the entry is truncated, travels in dumps (a node added after compaction gets it from the
leader's dump), and every node restarts into the log's configuration, not the bootstrap."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.consensus.membership import Change, Member
from hastate.consensus.node import DUMP
from hastate.state.dump import decode_dump
from hastate.testing import free_port, wait_for

from .conftest import on_tick_thread

CLUSTER = "membership-dump"


@pytest.fixture
def addresses() -> dict[str, str]:
    return {f"n{i}": f"127.0.0.1:{free_port()}" for i in range(1, 5)}


def _manager(tmp_path: Path, addresses: dict[str, str], node_id: str, *,
             join: bool = False) -> StateManager:
    return StateManager(node_id, addresses, data_dir=tmp_path / node_id, cluster_name=CLUSTER,
                        log_compaction_entries=20, join=join)


@pytest.fixture
def managers() -> Iterator[dict[str, StateManager]]:
    running: dict[str, StateManager] = {}
    yield running
    for sm in running.values():
        sm.stop()


def test_a_node_added_after_compaction_gets_the_configuration_from_the_dump(
        tmp_path: Path, addresses: dict[str, str], managers: dict[str, StateManager]) -> None:
    first = {k: addresses[k] for k in ("n1", "n2", "n3")}
    for node_id in first:
        managers[node_id] = _manager(tmp_path, first, node_id).start()
    wait_for(lambda: any(sm.is_leader() for sm in managers.values()), what="a leader")
    leader = next(sm for sm in managers.values() if sm.is_leader())
    for i in range(80):                                  # several compactions everywhere
        leader.save_state({f"k{i}": i})
    wait_for(lambda: all(sm.node.syncobj.compactions_total > 0 for sm in managers.values()),
             what="every node compacted")
    assert leader.node.syncobj.log_length() < 80         # n4 cannot get the log from index 1

    managers["n4"] = _manager(tmp_path, addresses, "n4", join=True).start()
    leader.add_member(Member("n4", addresses["n4"], region="r4"))
    leader.save_state({"after_add": True})
    wait_for(lambda: managers["n4"].machine.snapshot().get("after_add") is True,
             what="n4 caught up through the leader's dump")
    n4 = managers["n4"].node.syncobj
    assert n4.last_log_index() - n4.log_length() + 1 > 2  # its log starts at a dump
    assert {m.id for m in managers["n4"].members()} == {"n1", "n2", "n3", "n4"}
    assert managers["n4"].status()["member"] is True

    follower = next(i for i, sm in managers.items() if sm is not leader and i != "n4")
    leader.remove_member(follower)
    for i in range(40):                                  # compact past both changes
        leader.save_state({f"j{i}": i})
    members = {"n1", "n2", "n3", "n4"} - {follower}
    wait_for(lambda: all(managers[i].node.syncobj.compactions_total > 1 and
                         managers[i].machine.snapshot().get("j39") == 39 for i in members),
             what="members compacted after the removal")
    _, body = decode_dump((tmp_path / leader.instance_id / DUMP).read_bytes(), source="dump",
                          cluster=CLUSTER)
    assert {m["id"] for m in body["raft"]["cluster"]} == members
    assert {m["id"]: m["region"] for m in body["raft"]["cluster"]}["n4"] == "r4"

    expected = leader.get_state()
    for sm in managers.values():
        sm.stop()
    managers.clear()
    for node_id in members:   # all four addresses given: the dumps decide who is a member
        managers[node_id] = _manager(tmp_path, addresses, node_id).start()
    wait_for(lambda: any(sm.is_leader() for sm in managers.values()), what="a leader again")
    for sm in managers.values():
        assert {m.id for m in sm.members()} == members
    new_leader = next(sm for sm in managers.values() if sm.is_leader())
    assert new_leader.get_state() == expected
    new_leader.save_state({"restarted": True})


def test_an_appended_change_applies_at_once_and_is_undone_when_truncated(
        tmp_path: Path, addresses: dict[str, str], managers: dict[str, StateManager]) -> None:
    """n1 follows a leader n2 that is only a name here: the test plays its messages."""
    three = {k: addresses[k] for k in ("n1", "n2", "n3")}
    managers["n1"] = sm = _manager(tmp_path, three, "n1").start()
    so = sm.node.syncobj
    leader = next(n for n in so.otherNodes if n.id == three["n2"])
    add_n4 = Change("add", Member("n4", addresses["n4"])).encode()

    def append(term: int, entries: list[tuple[bytes, int, int]]) -> None:
        so._SyncObj__onMessageReceived(leader, {
            "type": "append_entries", "term": term, "prevLogIdx": 1, "prevLogTerm": 0,
            "entries": entries, "commit_index": 1})

    on_tick_thread(sm, lambda: append(5, [(add_n4, 2, 5)]))
    assert {m.id for m in sm.members()} == {"n1", "n2", "n3", "n4"}    # uncommitted, in effect
    assert on_tick_thread(sm, lambda: so.lease._peers) == {three["n2"], three["n3"],
                                                            addresses["n4"]}
    # A leader of a later term never had it: the conflicting entry goes, and so does n4.
    on_tick_thread(sm, lambda: append(6, [(b"\x01", 2, 6)]))
    assert {m.id for m in sm.members()} == {"n1", "n2", "n3"}
    assert addresses["n4"] not in {n.id for n in so.otherNodes}
    sm.stop()
    managers["n1"] = again = _manager(tmp_path, three, "n1").start()
    assert {m.id for m in again.members()} == {"n1", "n2", "n3"}        # from the journal
