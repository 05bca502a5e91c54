"""Proposals waiting together share one log entry, on an in-process three-node cluster.

The proposals are made from one task on the proposing node's tick thread, so all of them
wait in its queue when the next tick drains it: the grouping is then deterministic.
"""

from __future__ import annotations

import pickle
import threading
from queue import Empty
from pathlib import Path
from typing import Any, Iterator

import pytest

from hastate.consensus import wire
from hastate.consensus.backpressure import ProposalQueue
from hastate.consensus.grouping import MAX_BATCH_BYTES, Grouper, Proposal
from hastate.consensus.outcome import Outcome
from hastate.state.codec import MAX_BATCH_COMMANDS, Command, encode_value
from hastate.testing import wait_for
from hastate.testing.memory import MemoryCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MemoryCluster]:
    with MemoryCluster(3, data_dir=tmp_path / "data") as c:
        yield c


def write(client: bytes, seq: int) -> bytes:
    key = f"{client.decode()}-{seq}"
    return Command(op="update", client=client, seq=seq,
                   values={key: encode_value(key, "v" * 64)}).encode()


def propose_at_once(cluster: MemoryCluster, node_id: str, raws: list[bytes]
                    ) -> list[tuple[Any, Outcome]]:
    """Propose ``raws`` in one tick-thread task on ``node_id``; wait for every answer."""
    node = cluster.nodes[node_id]
    answers: list[Any] = [None] * len(raws)
    done = threading.Semaphore(0)

    def answer(position: int) -> Any:
        def callback(result: Any, outcome: Outcome) -> None:
            answers[position] = (result, outcome)
            done.release()
        return callback

    node.call_soon(lambda: [node.propose(raw, answer(i)) for i, raw in enumerate(raws)])
    for _ in raws:
        assert done.acquire(timeout=30), "a proposal was never answered"
    return answers


def entry_commands(cluster: MemoryCluster, node_id: str, first: int, last: int) -> list[Command]:
    """The state commands of ``node_id``'s log entries ``first``..``last`` (wire-checked)."""
    log = cluster.nodes[node_id].syncobj._SyncObj__raftLog
    commands = []
    for entry in log:
        if first <= entry[1] <= last:
            assert wire.check_command(entry[0]) and wire.is_plain_call(entry[0][1:])
            commands.append(Command.decode(pickle.loads(entry[0][1:])[1][0]))
    return commands


def assert_every_replica_applied(cluster: MemoryCluster, keys: set[str], revision: int) -> None:
    wait_for(lambda: all(m.revision == revision for m in cluster.machines.values()),
             what="every replica applied every write")
    for machine in cluster.machines.values():
        records = machine.records(keys)
        assert set(records) == keys
        assert all(r[3] == 1 for r in records.values())     # each key written once
    assert len({m.state_hash() for m in cluster.machines.values()}) == 1


def test_pipelined_writes_share_entries_and_apply_exactly_once_everywhere(
        cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader()
    so = cluster.nodes[leader].syncobj
    base = cluster.machines[leader].revision
    raws = [write(b"bot-%d" % (i % 3), i) for i in range(600)]
    raws.append(raws[10])                                   # a retry of a queued write
    before = so.last_log_index()
    answers = propose_at_once(cluster, leader, raws)
    after = so.last_log_index()
    # 601 commands, at most 256 per entry: three entries instead of 601.
    assert after - before == 3
    entries = entry_commands(cluster, leader, before + 1, after)
    assert [len(e.batch) for e in entries] == [256, 256, 89]
    assert all(outcome == Outcome.SUCCESS for _, outcome in answers)
    results = [result for result, _ in answers]
    assert all(r[0] == "ok" and before < r[2] <= after for r in results)
    revisions = [r[1] for r in results[:600]]
    assert sorted(revisions) == list(range(base + 1, base + 601))   # distinct, no gap
    assert revisions == sorted(revisions)                            # in proposal order
    assert results[600] == results[10]                               # the retry: same answer
    keys = {f"bot-{i % 3}-{i}" for i in range(600)}
    assert_every_replica_applied(cluster, keys, base + 600)


def test_a_followers_waiting_proposals_are_forwarded_as_one_command(
        cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader()
    follower = cluster.others(leader)[0]
    so = cluster.nodes[leader].syncobj
    base = cluster.machines[leader].revision
    count = MAX_BATCH_COMMANDS + 44
    before = so.last_log_index()
    answers = propose_at_once(cluster, follower, [write(b"f", i) for i in range(1, count + 1)])
    assert all(outcome == Outcome.SUCCESS for _, outcome in answers)
    entries = entry_commands(cluster, leader, before + 1, so.last_log_index())
    assert [len(e.batch) for e in entries] == [MAX_BATCH_COMMANDS, 44]
    assert sorted(r[1] for r, _ in answers) == list(range(base + 1, base + count + 1))
    assert_every_replica_applied(cluster, {f"f-{i}" for i in range(1, count + 1)},
                                 base + count)


def test_a_lone_proposal_stays_a_plain_command(cluster: MemoryCluster) -> None:
    leader = cluster.wait_leader()
    so = cluster.nodes[leader].syncobj
    before = so.last_log_index()
    [(result, outcome)] = propose_at_once(cluster, leader, [write(b"solo", 1)])
    assert outcome == Outcome.SUCCESS and result[0] == "ok"
    [entry] = entry_commands(cluster, leader, before + 1, so.last_log_index())
    assert entry.op == "update" and entry.client == b"solo"


# -- the queue's grouping, without a cluster ----------------------------------------------------

def test_the_queue_groups_runs_of_proposals_within_its_budget_and_fans_results_out() -> None:
    answers: list[tuple[int, Any, int]] = []
    queue = ProposalQueue(100, Grouper(lambda raw: b"call:" + raw))

    def proposal(i: int, raw: bytes | None = None) -> Proposal:
        return Proposal(raw or write(b"q", i + 1),
                        lambda result, error: answers.append((i, result, error)))

    for i in range(5):
        queue.put_nowait(proposal(i))
    queue.put_nowait((b"membership", None))           # not a proposal: ends the run
    queue.put_nowait(proposal(5))
    queue.put_nowait(proposal(6, b"G" * MAX_BATCH_BYTES))   # too big to join: goes alone
    queue.drain_budget(4, 10**6)                      # room for 4 commands
    command, callback = queue.get_nowait()
    members = Command.decode(command[len(b"call:"):])
    assert [m.seq for m in members.batch] == [1, 2, 3, 4]
    assert queue.drained_grouped == 3 and len(queue) == 4
    with pytest.raises(Empty):                        # budget spent: 4 commands
        queue.get_nowait()
    callback(("batch", ["r0", "r1", "r2", "r3"]), Outcome.SUCCESS)
    assert answers == [(i, f"r{i}", Outcome.SUCCESS) for i in range(4)]
    queue.drain_budget(None)
    assert queue.get_nowait()[0] == b"call:" + write(b"q", 5)   # alone before the
    assert queue.get_nowait() == (b"membership", None)          # membership change
    assert queue.get_nowait()[0] == b"call:" + write(b"q", 6)   # alone: the next is too big
    big, big_callback = queue.get_nowait()
    assert big == b"call:" + b"G" * MAX_BATCH_BYTES
    answers.clear()
    big_callback(None, Outcome.QUEUE_FULL)
    assert answers == [(6, None, Outcome.QUEUE_FULL)]


def test_a_failed_batch_fails_every_member_and_a_raising_callback_spares_the_others() -> None:
    answers: list[tuple[int, Any, int]] = []

    def callback(i: int) -> Any:
        def answer(result: Any, error: int) -> None:
            if i == 0:
                raise RuntimeError("a caller's bug")
            answers.append((i, result, error))
        return answer

    grouper = Grouper(lambda raw: raw)
    raws = [write(b"c", i) for i in range(1, 4)]
    command, fan_out = grouper.pack([Proposal(raw, callback(i)) for i, raw in enumerate(raws)])
    assert [m.seq for m in Command.decode(command).batch] == [1, 2, 3]
    fan_out(None, Outcome.LEADER_CHANGED)
    assert answers == [(1, None, Outcome.LEADER_CHANGED), (2, None, Outcome.LEADER_CHANGED)]
