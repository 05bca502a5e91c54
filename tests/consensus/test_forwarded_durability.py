"""Writes a follower forwards to the leader: group-committed, never applied before durable.

The leader answers forwarded proposals after the one fsync of the drained batch (not one
fsync per answer), and the follower still applies (hence acknowledges) a write only once
its entry is durable on a majority, the leader included. Every node logs the end of each
journal flush and the writer logs when it applies each of its own writes, all on the one
``CLOCK_MONOTONIC`` of this machine; the checker below reads that log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from hastate.consensus.grouping import MAX_BATCH_BYTES

from .harness import ProcCluster


def durability_violations(records: list[dict], leader: str, voters: int) -> list[str]:
    """Applies of the writer's own writes that came before a durable majority incl. ``leader``.

    ``records``: ``{"node", "kind": "flush"|"apply", "index", "t"}``. An apply of ``index``
    at ``t`` is fine when ``leader`` and enough other nodes for a majority of ``voters``
    finished a flush covering ``index`` at or before ``t``.
    """
    flushes: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        if r["kind"] == "flush":
            flushes.setdefault(r["node"], []).append((r["t"], r["index"]))

    def durable_by(node: str, index: int, t: int) -> bool:
        return any(ft <= t and fi >= index for ft, fi in flushes.get(node, ()))

    problems = []
    for r in records:
        if r["kind"] != "apply":
            continue
        durable = {n for n in flushes if durable_by(n, r["index"], r["t"])}
        if leader not in durable or len(durable) <= voters // 2:
            problems.append(f"{r['node']} applied index {r['index']} when it was durable on "
                            f"{sorted(durable)} only")
    return problems


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_the_checker_catches_an_apply_before_the_leaders_fsync() -> None:
    """Negative control: the same checker flags applies that precede a durable majority."""
    records = [
        {"node": "n2", "kind": "flush", "index": 7, "t": 100},
        {"node": "n3", "kind": "flush", "index": 7, "t": 100},
        {"node": "n1", "kind": "flush", "index": 7, "t": 300},
        {"node": "n2", "kind": "apply", "index": 7, "t": 200},   # leader n1 not yet durable
        {"node": "n2", "kind": "flush", "index": 9, "t": 400},
        {"node": "n1", "kind": "flush", "index": 8, "t": 400},
        {"node": "n2", "kind": "apply", "index": 9, "t": 500},   # leader durable to 8 only
        {"node": "n2", "kind": "apply", "index": 8, "t": 500},   # fine: n1 and n2 hold 8
    ]
    assert durability_violations(records, "n1", 3) == [
        "n2 applied index 7 when it was durable on ['n2', 'n3'] only",
        "n2 applied index 9 when it was durable on ['n2'] only"]


def test_forwarded_writes_are_group_committed_and_applied_only_once_durable(
        proc_cluster: Callable[..., ProcCluster]) -> None:
    c = proc_cluster("hastate", durability_trace=True)
    leader = c.wait_leader(30)
    writer = next(i for i in c.ids if i != leader)
    before = c.status(leader)["journal"]
    # Values too large for two to share a log entry: each forwarded write stays its own
    # entry, so the fsync count below still tells one fsync per drain from one per answer.
    ack_file = c.start_load(writer, count=400, prefix="fwd", threads=8,
                            value_size=MAX_BATCH_BYTES // 2)
    c.wait_for("the load to finish",
               lambda: (c.get(writer, "/load") or {}).get("running") == 0, 120)
    progress = c.get(writer, "/load")
    assert progress["acked"] == 400 and progress["failed"] == 0, progress
    assert c.leader() == leader, "leadership moved during the load; rerun"
    after = c.status(leader)["journal"]
    records = _read(c.durability_trace)
    applies = [r for r in records if r["kind"] == "apply"]
    assert len(applies) >= 400 and {r["node"] for r in applies} == {writer}
    assert durability_violations(records, leader, len(c.ids)) == []
    # Group commit: the leader made the forwarded entries durable in fewer fsyncs than
    # entries (one fsync per answer would make them equal).
    synced = after["entries_synced"] - before["entries_synced"]
    flushes = after["flushes"] - before["flushes"]
    assert synced >= 400 and flushes < synced, (synced, flushes)
    assert len(c.acked(ack_file)) == 400
