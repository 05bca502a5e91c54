"""A follower installing the leader's snapshot never commits its own unverified log tail.

Defect 14: PySyncObj raises a follower's commit index to ``min(leader's commit, own last
index)`` after *every* snapshot message, also after a chunk that is not the last one and
after a snapshot the follower dropped; a deposed leader then applies (and acknowledges to its
clients) entries of its old term that the cluster never committed. Run in-process over the
memory transport, with a state large enough for the snapshot to travel in several chunks.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from hastate.consensus.outcome import Outcome
from hastate.state.codec import Command, encode_value
from hastate.testing import wait_for
from hastate.testing.memory import MemoryCluster

BIG = "x" * 20_000           # 30 keys of this: a snapshot of several 64 KiB chunks


def test_a_deposed_leader_acknowledges_nothing_the_new_leader_did_not_commit(
        tmp_path: Path) -> None:
    with MemoryCluster(3, data_dir=tmp_path / "data", log_compaction_entries=20) as cluster:
        old = cluster.wait_leader()
        for i in range(30):
            assert cluster.write(old, {f"big{i}": BIG})[1] == Outcome.SUCCESS
        applied_on_old: list[str] = []

        class Seen:
            def changed(self, revision: int, changes: Any) -> None:
                applied_on_old.extend(c.key for c in changes)

            def reset(self, revision: int, history: Any) -> None:
                pass

            def export(self) -> list:
                return []
        cluster.machines[old].add_change_listener(Seen())
        cluster.partition(old)
        answers: dict[str, Outcome] = {}
        lock = threading.Lock()

        def remember(key: str) -> Any:
            def callback(_result: Any, outcome: Outcome) -> None:
                with lock:
                    answers[key] = outcome
            return callback

        for i in range(5):      # appended by the cut-off leader, never replicated
            key = f"tail{i}"
            command = Command(op="update", values={key: encode_value(key, i)})
            cluster.nodes[old].propose(command.encode(), remember(key))
        new = cluster.wait_leader(among=cluster.others(old))
        for i in range(60):     # past the compaction threshold: the new leader must send a dump
            assert cluster.write(new, {f"new{i}": i})[1] == Outcome.SUCCESS
        # The snapshot's last chunk is lost for a while (over TCP the chunks of one dump
        # arrive over several ticks): the old leader holds only its first chunks.
        undo = cluster.drop(lambda _src, dst, message: dst == old and bool(
            message.get("serialized") and message["serialized"][2]))
        cluster.heal(keep_drops=True)
        time.sleep(1.0)
        undo()
        wait_for(lambda: cluster.state(old).get("new59") == 59, timeout=20,
                 what="the old leader caught up with the new one")
        final = cluster.state(new)
        acknowledged = sorted(k for k, outcome in answers.items() if outcome == Outcome.SUCCESS)
        assert [k for k in acknowledged if k not in final] == [], \
            f"acknowledged but lost: {acknowledged} (answers {answers})"
        assert [k for k in applied_on_old if k not in final] == [], \
            "the old leader applied entries the cluster never committed"
        wait_for(lambda: cluster.state(old) == cluster.state(new), timeout=20,
                 what="the replicas converged")
