"""The leader's per-follower send window never stalls a follower whose acks were lost.

The leader sends a follower at most ``max_inflight_entries`` past its last ack. When the
entries in that window are lost (a connection dropped them), no ack ever comes back: the
leader must send again from the last ack, or the follower never catches up.
"""

from __future__ import annotations

import time
from pathlib import Path

from hastate.consensus.backpressure import Limits
from hastate.consensus.outcome import Outcome
from hastate.testing import wait_for
from hastate.testing.memory import MemoryCluster


def test_a_follower_whose_window_was_lost_catches_up(tmp_path: Path) -> None:
    with MemoryCluster(3, data_dir=tmp_path / "data",
                       limits=Limits(max_inflight_entries=8)) as cluster:
        leader = cluster.wait_leader()
        behind, other = cluster.others(leader)
        assert cluster.write(leader, {"first": 0})[1] == Outcome.SUCCESS
        wait_for(lambda: cluster.state(behind) == {"first": 0}, what="a first ack")
        undo = cluster.drop(lambda _src, dst, message: dst == behind and bool(
            message.get("type") == "append_entries" and message.get("entries")))
        for i in range(40):            # five windows' worth, every entry to `behind` lost
            assert cluster.write(leader, {f"k{i}": i})[1] == Outcome.SUCCESS
        time.sleep(0.5)
        undo()                         # the link delivers again; nothing is resent by itself
        assert cluster.write(leader, {"last": 1})[1] == Outcome.SUCCESS
        wait_for(lambda: cluster.state(behind) == cluster.state(other), timeout=15,
                 what="the follower whose window was lost caught up")
        assert cluster.state(behind)["k39"] == 39
