"""Defect 1: kill -9 of every node must not lose an acknowledged write."""

from __future__ import annotations

from typing import Callable

import pytest

from .harness import ProcCluster

RAW_LOSES = pytest.mark.xfail(strict=True, reason="defect 1: PySyncObj discards the journal "
                              "after a dump renamed by an orphaned compaction child")
ENGINES = ["hastate", pytest.param("raw", marks=RAW_LOSES)]


def settled(c: ProcCluster, node_id: str) -> bool:
    """The node leads and has committed and applied its whole log (restart fully replayed)."""
    st = c.status(node_id)
    return bool(st and st["is_leader"] and
                st["applied"] == st["commit_index"] == st["last_log_index"])


def kill_all_cycles(c: ProcCluster, cycles: int, acks_per_cycle: int, threads: int) -> dict:
    """Write until ``acks_per_cycle`` are acknowledged, kill -9 every node, restart, check.

    1 kB values make each dump take a few tens of ms, as a real state does; with
    compaction every 50 entries a dump is being written most of the time.
    """
    acknowledged: list[str] = []
    report = {"cycles": 0, "acked": 0, "lost": []}
    for cycle in range(cycles):
        leader = c.wait_leader(30)
        ack_file = c.start_load(leader, count=10**6, prefix=f"c{cycle}", threads=threads,
                                value_size=1000)
        c.wait_for(f"{acks_per_cycle} acknowledged writes",
                   lambda: len(c.acked(ack_file)) >= acks_per_cycle, 60)
        c.kill_all()                      # the writers die with their node, mid-flight
        acknowledged += c.acked(ack_file)
        c.wait_orphans()                  # forked dump writers (raw) finish, as they would
        c.start_all()
        leader = c.wait_leader(30)
        c.wait_for("the restarted leader to apply its whole log",
                   lambda: settled(c, leader), 30)
        data = c.get(leader, "/data", timeout=30)
        lost = [key for key in acknowledged if key not in data]
        report["cycles"] += 1
        report["acked"] = len(acknowledged)
        report["lost"] += lost
        assert not lost, (f"cycle {cycle}: {len(lost)} of {len(acknowledged)} acknowledged "
                          f"writes lost after kill -9 of all nodes, e.g. {lost[:5]}")
    return report


@pytest.mark.parametrize("engine", ENGINES)
def test_acknowledged_writes_survive_kill9_of_all_nodes(
        proc_cluster: Callable[..., ProcCluster], engine: str) -> None:
    """Cycles of: writes under frequent compaction, kill -9 of all nodes, restart, check.

    hastate: 3 cycles. Raw PySyncObj loses acknowledged writes in about half of the cycles
    (measured), so it gets up to 8 and stops at the first loss.
    """
    c = proc_cluster(engine, compaction=50)
    # Raw PySyncObj batches every 100 ms, so it needs more writers for the same load.
    cycles = 3 if engine == "hastate" else 8
    report = kill_all_cycles(c, cycles=cycles, acks_per_cycle=300,
                             threads=4 if engine == "hastate" else 32)
    assert report["acked"] >= 300 * cycles


@pytest.mark.chaos
@pytest.mark.parametrize("engine", ENGINES)
def test_acknowledged_writes_survive_20_kill9_cycles(
        proc_cluster: Callable[..., ProcCluster], engine: str) -> None:
    """The long campaign: 20 kill -9 cycles of the whole cluster."""
    c = proc_cluster(engine, compaction=50)
    kill_all_cycles(c, cycles=20, acks_per_cycle=500, threads=4 if engine == "hastate" else 32)


def test_corrupt_journal_refuses_start_naming_file_and_offset(
        proc_cluster: Callable[..., ProcCluster]) -> None:
    """A node whose journal is damaged mid-file does not start; its log says where."""
    c = proc_cluster("hastate", compaction=10**6)
    leader = c.wait_leader(30)
    ack_file = c.start_load(leader, count=200, prefix="w", threads=2)
    c.wait_for("200 acks", lambda: len(c.acked(ack_file)) >= 200, 60)
    victim = next(i for i in c.ids if i != leader)
    c.kill(victim)
    journal = c.workdir / "data" / victim / "raft.journal"
    blob = bytearray(journal.read_bytes())
    offset = len(blob) // 2
    blob[offset] ^= 0xFF
    journal.write_bytes(bytes(blob))
    c.start(victim)
    proc = c.procs[victim]
    proc.wait(30)
    assert proc.returncode != 0
    log = c.log(victim)
    assert "CorruptDataError" in log and str(journal) in log and "offset" in log, log[-2000:]
