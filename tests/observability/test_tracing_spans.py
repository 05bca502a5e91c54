"""Spans of writes, reads and failures in a three-node cluster inside the test process.

All three nodes share the process's tracer provider, so one in-memory exporter sees the
proposer's spans and the leader's and replicas' spans of the same trace.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.errors import WriteError
from hastate.state.codec import Command
from hastate.state.machine import applied_commands
from hastate.testing import free_port, wait_for

from tracing_support import Spans, spans  # noqa: F401  (fixture)

CLUSTER = "trace-unit"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, StateManager]]:
    peers = {f"n{i}": f"127.0.0.1:{free_port()}" for i in range(1, 4)}
    managers = {node_id: StateManager(node_id, peers, data_dir=tmp_path / node_id,
                                      cluster_name=CLUSTER) for node_id in peers}
    try:
        for sm in managers.values():
            sm.start()
        for sm in managers.values():
            sm.wait_ready(20)
        wait_for(lambda: any(sm.is_leader() and sm.node.syncobj.caught_up_in_term()
                             for sm in managers.values()), what="a leader with its lease")
        yield managers
    finally:
        for sm in managers.values():
            sm.stop()


def leader_and_follower(cluster: dict[str, StateManager]) -> tuple[StateManager, StateManager]:
    leader = next(sm for sm in cluster.values() if sm.is_leader())
    follower = next(sm for sm in cluster.values() if sm is not leader)
    return leader, follower


def _ns(span, which: str) -> int:
    return getattr(span, f"{which}_time")


def test_a_write_from_a_follower_is_one_trace_across_follower_and_leader(
        cluster: dict[str, StateManager], spans: Spans) -> None:
    leader, follower = leader_and_follower(cluster)
    revision = follower.save_state({"model": "v2"})
    wait_for(lambda: len(spans.named("hastate.replica.append")) == 2 and
             len(spans.named("hastate.leader.commit")) == 1, what="every node's spans")

    op = spans.one("save_state")
    assert op.parent is None and op.kind.name == "CLIENT"
    index = op.attributes["hastate.log.index"]
    assert dict(op.attributes) == {
        "db.system.name": "hastate", "db.operation.name": "save_state",
        "db.namespace": CLUSTER, "hastate.node.id": follower.instance_id,
        "hastate.result": "ok", "hastate.revision": revision, "hastate.log.index": index}
    assert {s.context.trace_id for s in spans.finished()} == {op.context.trace_id}

    (forward,) = spans.children(op)
    assert forward.name == "hastate.forward" and forward.kind.name == "CLIENT"
    assert forward.attributes["hastate.leader.id"] == leader.instance_id
    assert forward.attributes["hastate.outcome"] == "success"

    commit = spans.one("hastate.leader.commit")
    assert commit.parent.span_id == forward.context.span_id and commit.parent.is_remote
    assert commit.kind.name == "SERVER"
    assert commit.attributes["hastate.node.id"] == leader.instance_id
    assert commit.attributes["hastate.log.index"] == index
    assert commit.attributes["hastate.raft.term"] == leader.node.syncobj.raftCurrentTerm
    phases = {s.name: s for s in spans.children(commit)}
    assert sorted(phases) == ["hastate.apply", "hastate.journal.fsync", "hastate.queue_wait",
                              "hastate.replicate"]
    queue, fsync = phases["hastate.queue_wait"], phases["hastate.journal.fsync"]
    replicate, apply = phases["hastate.replicate"], phases["hastate.apply"]
    # Queued, then made durable and replicated to a majority (the leader's fsync overlaps
    # the followers' writes), then applied.
    assert _ns(op, "start") <= _ns(forward, "start") <= _ns(commit, "start") == _ns(queue, "start")
    assert _ns(queue, "end") <= _ns(fsync, "start") <= _ns(fsync, "end") <= _ns(apply, "start")
    assert _ns(queue, "end") <= _ns(replicate, "start") <= _ns(replicate, "end") <= _ns(apply, "start")
    assert _ns(apply, "end") == _ns(commit, "end")
    assert _ns(commit, "end") <= _ns(forward, "end") <= _ns(op, "end")
    acked = replicate.attributes["hastate.replicas.acked"]
    assert set(acked) <= set(cluster) - {leader.instance_id} and len(acked) >= 1
    assert fsync.attributes["hastate.batch.size"] >= 1

    replicas = spans.named("hastate.replica.append")
    assert {s.attributes["hastate.node.id"] for s in replicas} == \
        set(cluster) - {leader.instance_id}
    for replica in replicas:
        assert replica.parent.span_id == forward.context.span_id
        assert replica.attributes["hastate.log.index"] == index
        names = sorted(s.name for s in spans.children(replica))
        assert names == ["hastate.apply", "hastate.journal.fsync"]


def test_a_write_on_the_leader_has_a_propose_span_and_the_leader_phases(
        cluster: dict[str, StateManager], spans: Spans) -> None:
    leader, _ = leader_and_follower(cluster)
    revision = leader.delete("gone")
    wait_for(lambda: spans.named("hastate.leader.commit"), what="the leader's span")
    op = spans.one("delete")
    (propose,) = spans.children(op)
    assert propose.name == "hastate.propose" and propose.attributes["hastate.attempt"] == 1
    commit = spans.one("hastate.leader.commit")
    assert commit.parent.span_id == propose.context.span_id
    assert op.attributes["hastate.revision"] == revision
    assert op.attributes["hastate.log.index"] == commit.attributes["hastate.log.index"]


def test_a_follower_read_passes_a_traced_barrier(cluster: dict[str, StateManager],
                                                 spans: Spans) -> None:
    _, follower = leader_and_follower(cluster)
    follower.get_state()
    read = spans.one("get_state")
    assert read.attributes["hastate.consistency"] == "linearizable"
    (barrier,) = spans.children(read)
    assert barrier.name == "barrier" and barrier.kind.name == "INTERNAL"
    assert [s.name for s in spans.children(barrier)] == ["hastate.forward"]


def test_only_traced_commands_carry_trace_context(cluster: dict[str, StateManager],
                                                  request: pytest.FixtureRequest) -> None:
    leader, follower = leader_and_follower(cluster)
    seen: list[Command] = []
    leader.machine.add_listener(lambda _i, _p, entry, result: seen.extend(
        command for command, _ in applied_commands(entry, result)))
    follower.save_state({"untraced": 1})            # tracing is off outside ``spans``
    wait_for(lambda: any("untraced" in c.values for c in seen), what="the untraced write")
    assert all(c.meta == {} for c in seen)

    traced: Spans = request.getfixturevalue("spans")
    follower.save_state({"traced": 1})
    wait_for(lambda: any("traced" in c.values for c in seen), what="the traced write")
    command = next(c for c in seen if "traced" in c.values)
    forward = traced.one("hastate.forward")
    assert command.meta["traceparent"].startswith(
        f"00-{forward.context.trace_id:032x}-{forward.context.span_id:016x}-")


def test_a_failed_write_marks_its_span_with_the_error(cluster: dict[str, StateManager],
                                                      spans: Spans) -> None:
    leader, follower = leader_and_follower(cluster)
    for sm in cluster.values():
        if sm is not follower:
            sm.stop()
    with pytest.raises(WriteError) as failed:
        follower.save_state({"lost": True}, timeout=1.0)
    op = spans.one("save_state")
    assert op.status.status_code.name == "ERROR"
    assert op.attributes["error.type"] == type(failed.value).__qualname__
    assert op.attributes["hastate.outcome_unknown"] == failed.value.outcome_unknown
    attempts = spans.children(op)
    assert attempts and all(a.attributes["hastate.outcome"] for a in attempts)


def test_log_records_carry_the_ids_of_the_current_span(spans: Spans,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from hastate.observability import tracing

    handler = caplog.handler
    tracing.install_log_filter([handler])
    log = logging.getLogger("hastate.test")
    with caplog.at_level(logging.INFO, logger="hastate.test"):
        log.info("outside")
        with tracing.span("work") as current:
            log.info("inside")
    outside, inside = caplog.records[-2:]
    assert not hasattr(outside, "trace_id") and not hasattr(outside, "span_id")
    ctx = current.get_span_context()
    assert inside.trace_id == f"{ctx.trace_id:032x}" and inside.span_id == f"{ctx.span_id:016x}"


def test_failover_and_membership_calls_have_spans(cluster: dict[str, StateManager],
                                                  spans: Spans) -> None:
    leader, follower = leader_and_follower(cluster)
    seconds = follower.trigger_failover(follower.instance_id)
    failover = spans.one("trigger_failover")
    assert failover.attributes["hastate.failover.target"] == follower.instance_id
    assert failover.attributes["hastate.failover.reason"] == "manual"
    assert failover.attributes["hastate.failover.seconds"] == seconds
    assert failover.attributes["db.namespace"] == CLUSTER

    wait_for(lambda: follower.is_leader() and follower.node.syncobj.caught_up_in_term(),
             what="the new leader's lease")
    index = follower.remove_member(leader.instance_id)
    removal = spans.one("remove_member")
    assert removal.attributes["hastate.member.id"] == leader.instance_id
    assert removal.attributes["hastate.log.index"] == index
    assert removal.attributes["hastate.node.id"] == follower.instance_id


def test_concurrent_writes_each_get_every_leader_phase(cluster: dict[str, StateManager],
                                                       spans: Spans) -> None:
    """Batches (one drain, one fsync, one send for many entries) still give every traced
    entry its own phase spans, whichever node the writes come from."""
    leader, follower = leader_and_follower(cluster)
    writers = [leader, follower] * 6

    def write(n: int) -> int:
        return writers[n].save_state({f"c{n}": n})
    with ThreadPoolExecutor(len(writers)) as pool:
        revisions = list(pool.map(write, range(len(writers))))
    wait_for(lambda: len(spans.named("hastate.leader.commit")) == len(writers),
             what="a leader span per write")
    ops = spans.named("save_state")
    assert sorted(op.attributes["hastate.revision"] for op in ops) == sorted(revisions)
    commits = {s.attributes["hastate.log.index"]: s for s in spans.named("hastate.leader.commit")}
    assert sorted(commits) == sorted(op.attributes["hastate.log.index"] for op in ops)
    for index, commit in commits.items():
        phases = {s.name: s for s in spans.children(commit)}
        assert sorted(phases) == ["hastate.apply", "hastate.journal.fsync",
                                  "hastate.queue_wait", "hastate.replicate"], index
        assert phases["hastate.journal.fsync"].end_time <= phases["hastate.apply"].start_time
        assert phases["hastate.replicate"].end_time <= phases["hastate.apply"].start_time
        assert 1 <= phases["hastate.journal.fsync"].attributes["hastate.batch.size"]
