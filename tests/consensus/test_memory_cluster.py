"""Consensus rules on an in-process cluster over the memory transport: no ports, no processes.

Each test starts three real RaftNodes (journal, lease, pre-vote) whose messages go through
hastate.testing.memory's network, cuts or filters links, and checks the outcome.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from hastate.consensus.outcome import Outcome
from hastate.consensus.grouping import MAX_BATCH_BYTES
from hastate.consensus.raft import PONG
from hastate.state.codec import Command, encode_value
from hastate.testing import wait_for
from hastate.testing.lease_trace import LeaseTrace
from hastate.testing.memory import MemoryCluster

from .test_lease_sigstop import leader_intervals, overlaps


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MemoryCluster]:
    with MemoryCluster(3, data_dir=tmp_path / "data") as c:
        yield c


def test_one_leader_is_elected_and_a_write_reaches_every_replica(cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader()
    assert cluster.leaders() == [leader]
    follower = cluster.others(leader)[0]
    result, outcome = cluster.write(follower, {"k": "v"})   # forwarded to the leader
    assert outcome == Outcome.SUCCESS and result[0] == "ok"
    wait_for(lambda: all(cluster.state(i) == {"k": "v"} for i in cluster.ids),
             what="every replica applied the write")
    assert cluster.network.delivered > 0 and cluster.network.dropped == 0


def test_a_write_commits_on_a_majority_and_the_cut_off_follower_catches_up(
        cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader()
    cut, peer = cluster.others(leader)
    cluster.partition(cut)
    result, outcome = cluster.write(leader, {"k": 1})
    assert outcome == Outcome.SUCCESS and result[0] == "ok"
    index = result[2]                                   # ("ok", revision, log index)
    wait_for(lambda: cluster.state(peer) == {"k": 1}, what="the connected follower applied it")
    assert cluster.state(cut) == {}                      # never reached the cut-off node
    assert cluster.nodes[cut].status().commit_index < index
    cluster.heal()
    wait_for(lambda: cluster.state(cut) == {"k": 1}, what="the healed follower caught up")


def test_a_partitioned_minority_leader_loses_its_lease_and_steps_down(
        cluster: MemoryCluster, tmp_path: Path) -> None:
    trace = tmp_path / "leases.jsonl"
    for node in cluster.nodes.values():
        node.add_tick_observer(LeaseTrace(str(trace), node))
    old = cluster.wait_leader()
    old_term = cluster.nodes[old].term()
    cluster.partition(old)
    new = cluster.wait_leader(among=cluster.others(old))
    assert cluster.nodes[new].term() > old_term
    assert not cluster.nodes[old].is_leader()            # its lease ran out
    wait_for(lambda: cluster.nodes[old].role() != "leader",
             what="the cut-off leader stepped down")
    attempt = cluster.write(old, {"lost": True}, timeout=1.0)
    assert attempt is None or attempt[1] != Outcome.SUCCESS   # nothing commits on a minority
    result, outcome = cluster.write(new, {"k": "majority"})
    assert outcome == Outcome.SUCCESS
    cluster.heal()
    wait_for(lambda: cluster.state(old).get("k") == "majority",
             what="the old leader follows the new one")
    assert cluster.leaders() in ([new], [])              # the old leader did not come back
    intervals = leader_intervals(trace, "hastate", time.monotonic())
    assert {old, new} <= {node for node, _a, _b in intervals}, intervals
    assert not overlaps(intervals), "two nodes held a lease at the same time"


def test_prevote_keeps_an_isolated_followers_term(cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader()
    follower = cluster.nodes[cluster.others(leader)[0]]
    term = follower.term()
    rounds = follower.status().prevotes_started
    cluster.partition(follower.spec.node_id)
    wait_for(lambda: follower.status().prevotes_started >= rounds + 3, timeout=15,
             what="three pre-vote rounds on the isolated follower")
    assert follower.term() == term                       # no round won, so no election ran
    assert follower.role() == "follower"
    cluster.heal()
    wait_for(lambda: follower.leader_id() == leader, what="the follower hears the leader")
    assert cluster.nodes[leader].term() == term          # its return deposed nobody


def test_lost_lease_acks_cost_the_leader_its_lease_but_not_raft_leadership(
        cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader()
    node = cluster.nodes[leader]
    undo = cluster.drop(lambda _src, dst, message: dst == leader and message["type"] == PONG)
    wait_for(lambda: not node.is_leader(), what="the lease to run out")
    assert node.role() == "leader"                       # append_entries replies still arrive
    assert cluster.network.dropped > 0
    undo()
    wait_for(node.is_leader, what="the lease to come back once acks arrive")


def test_a_follower_cut_off_past_a_compaction_catches_up_from_the_leaders_dump(
        tmp_path: Path) -> None:
    with MemoryCluster(3, data_dir=tmp_path / "data", log_compaction_entries=20) as cluster:
        leader = cluster.wait_leader()
        cut = cluster.others(leader)[0]
        cluster.partition(cut)
        for i in range(100):
            result = cluster.write(leader, {f"k{i}": i})
            assert result is not None and result[1] == Outcome.SUCCESS
        wait_for(lambda: cluster.nodes[leader].status().compactions > 0,
                 what="the leader compacted its log")
        status = cluster.nodes[leader].status()
        assert status.log_entries < status.last_log_index   # the early entries are gone
        cluster.heal()
        wait_for(lambda: cluster.state(cut) == cluster.state(leader), timeout=20,
                 what="the cut-off follower caught up")
        assert len(cluster.state(cut)) == 100
        assert cluster.nodes[cut].status().log_entries < 100  # it started from the dump


def test_a_pipelined_leader_sends_each_entry_once_per_follower(cluster: MemoryCluster) -> None:
    """Acks of earlier batches must not make the leader send the batches in flight again.

    Each value is over half the largest proposal group, so every write is its own entry."""
    leader = cluster.wait_leader()
    sent: Counter[str] = Counter()

    def count(src: str, dst: str, message: dict) -> bool:
        if src == leader and message["type"] == "append_entries":
            sent[dst] += len(message.get("entries", ()))
        return False                                     # count only, lose nothing

    node = cluster.nodes[leader]
    first = node.syncobj.last_log_index()
    cluster.drop(count)
    writes = 1000
    done = threading.Semaphore(0)
    value = "v" * (MAX_BATCH_BYTES // 2 + 1024)
    for i in range(writes):
        command = Command(op="update", values={f"k{i}": encode_value(f"k{i}", value)})
        node.propose(command.encode(), lambda _result, _outcome: done.release())
    for _ in range(writes):
        assert done.acquire(timeout=60), "a pipelined write never completed"
    wait_for(lambda: all(len(cluster.state(i)) == writes for i in cluster.ids),
             what="every replica applied every write")
    entries = node.syncobj.last_log_index() - first
    assert entries >= writes                             # one entry per write (no grouping)
    # Each follower needs each entry once; allow a few resends (a heartbeat racing an ack).
    assert set(sent) == set(cluster.others(leader))
    assert all(n <= entries * 1.1 for n in sent.values()), (sent, entries)
