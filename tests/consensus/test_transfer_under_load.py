"""Leadership transfer to a named node succeeds under steady writes."""

from __future__ import annotations

from typing import Callable

import pytest

from .harness import ProcCluster

RAW_DENIED = pytest.mark.xfail(strict=True, reason="PySyncObj's transferLeadership refuses "
                               "(REQUEST_DENIED) unless the target's matchIndex equals the "
                               "leader's last index, never true under steady writes")


@pytest.mark.parametrize("engine", ["hastate", pytest.param("raw", marks=RAW_DENIED)])
def test_three_transfers_to_named_nodes_while_writing_1500_per_second(
        proc_cluster: Callable[..., ProcCluster], engine: str) -> None:
    """A writer does ~1.5k writes/s; leadership moves to each named node in turn, mid-stream.

    Each transfer is asked of the current leader. Raw PySyncObj now and then catches its
    target fully matched and succeeds, so three in a row are required.
    """
    c = proc_cluster(engine, raw_batch=False)
    first = c.wait_leader(30)
    writer = first
    threads = 6 if engine == "hastate" else 32
    ack_file = c.start_load(writer, count=12000, prefix="w", threads=threads, rate=1500)
    c.wait_for("1000 acks", lambda: len(c.acked(ack_file)) >= 1000, 60)
    leader = first
    for target in [i for i in c.ids if i != first] + [first]:
        result = c.post(leader, "/transfer", {"to": target})
        assert result["ok"], f"transfer {leader} -> {target} refused under load: {result}"
        c.wait_for(f"{target} to lead", lambda: c.leader() == target, 30)
        leader = target
        acked = len(c.acked(ack_file))
        c.wait_for("writes to go on", lambda: len(c.acked(ack_file)) >= acked + 500, 60)
    c.wait_for("the load to finish",
               lambda: (c.get(writer, "/load") or {}).get("running") == 0, 120)
    progress = c.get(writer, "/load")
    assert progress["failed"] == 0 and progress["acked"] == 12000 // threads * threads, progress
    # Bounded pause: the longest gap between two acknowledgements, transfers included,
    # stays far below a failover (measured: well under one second).
    assert progress["max_gap"] < 5.0, progress
