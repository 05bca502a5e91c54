"""Leadership transfer to a named node succeeds under steady writes (issue 4)."""

from __future__ import annotations

from typing import Callable

import pytest

from .harness import ProcCluster

RAW_DENIED = pytest.mark.xfail(strict=True, reason="PySyncObj's transferLeadership refuses "
                               "(REQUEST_DENIED) unless the target's matchIndex equals the "
                               "leader's last index, never true under steady writes")


@pytest.mark.parametrize("engine", ["hastate", pytest.param("raw", marks=RAW_DENIED)])
def test_transfer_to_named_node_while_writing_1500_per_second(
        proc_cluster: Callable[..., ProcCluster], engine: str) -> None:
    """A writer on the leader does ~1.5k writes/s; transfer to a named follower mid-stream."""
    c = proc_cluster(engine, raw_batch=False)
    leader = c.wait_leader(30)
    target = next(i for i in c.ids if i != leader)
    threads = 6 if engine == "hastate" else 32
    ack_file = c.start_load(leader, count=9000, prefix="w", threads=threads, rate=1500)
    c.wait_for("1000 acks", lambda: len(c.acked(ack_file)) >= 1000, 60)
    result = c.post(leader, "/transfer", {"to": target})
    assert result["ok"], f"transfer refused under load: {result}"
    c.wait_for(f"{target} to lead", lambda: c.leader() == target, 30)
    c.wait_for("the load to finish",
               lambda: (c.get(leader, "/load") or {}).get("running") == 0, 120)
    progress = c.get(leader, "/load")
    assert progress["failed"] == 0 and progress["acked"] == 9000 // threads * threads, progress
    # Bounded pause: the longest gap between two acknowledgements stays within one
    # election timeout range (lan profile: 1.2 s max), far below a failover.
    assert progress["max_gap"] < 5.0, progress
