"""Pre-vote: a follower cut off for several election timeouts keeps its term, so when the
partition heals the leader is not deposed (PySyncObj alone raises the isolated node's term
on every timeout, and the first message it sends after the heal makes the leader step down).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from hastate.testing import wait_for

from .campaign import ChaosCluster
from .netns import NetnsLab


def test_isolated_follower_rejoins_without_deposing_the_leader(
        netns_lab: Callable[..., NetnsLab], tmp_path: Path) -> None:
    c = ChaosCluster(netns_lab(3), tmp_path, compaction=5000)
    try:
        c.start_all()
        leader = c.wait_leader(30)
        assert leader is not None
        term = c.status(leader)["term"]
        follower = next(n for n in c.ids if n != leader)
        c.lab.isolate(follower)
        time.sleep(5.0)                                  # > 4 maximum election timeouts (lan)
        cut_off = c.status(follower)
        assert cut_off["term"] == term and cut_off["role"] != "leader", cut_off
        assert c.call(leader, "POST", "/write", {"key": "k", "value": 1}, 5)["result"] == "ok"
        c.lab.heal()
        wait_for(lambda: (c.status(follower) or {}).get("applied", 0) >=
                 c.status(leader)["applied"], what="the follower catching up")
        time.sleep(1.0)
        assert c.leader() == leader
        assert {c.status(n)["term"] for n in c.ids} == {term}
    finally:
        c.shutdown()
