"""Defect 14: a follower receiving the leader's dump never commits its own unmatched tail.

In-process over the memory transport: the leader is cut off while writes are proposed to
it (they reach only its own log), a new leader writes past a compaction, and after the heal
the old leader catches up from the new leader's dump, sent in several chunks. No chunk
before the last may move the old leader's commit index (its log is not matched against
the new leader's until the dump is loaded), and none of its own entries may ever be
applied or acknowledged: they were never committed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import pytest

from hastate.consensus.outcome import Outcome
from hastate.consensus.raft import HastateSyncObj
from hastate.state.codec import Command, encode_value
from hastate.state.history import Change
from hastate.testing import wait_for
from hastate.testing.memory import MemoryCluster


class KeysApplied:
    """A change listener remembering every key a replica's apply path changed."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def changed(self, revision: int, changes: Sequence[Change]) -> None:
        self.keys.update(c.key for c in changes)

    def reset(self, revision: int, history: Sequence[object] = ()) -> None:
        """A dump replaced the state: nothing was applied by it."""

    def export(self) -> list[tuple[int, tuple[Change, ...]]]:
        return []


def test_a_deposed_leader_never_applies_its_tail_while_the_leaders_dump_arrives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks: list[tuple[HastateSyncObj, bool, int, int]] = []   # receiver, last?, commits
    receive = HastateSyncObj._SyncObj__onMessageReceived

    def recording(self: HastateSyncObj, node: Any, message: dict[str, Any]) -> None:
        before = self.raftCommitIndex
        receive(self, node, message)
        if message.get("type") == "append_entries" and message.get("serialized"):
            chunks.append((self, bool(message["serialized"][2]), before,
                           self.raftCommitIndex))

    monkeypatch.setattr(HastateSyncObj, "_SyncObj__onMessageReceived", recording)
    with MemoryCluster(3, data_dir=tmp_path / "data", log_compaction_entries=20) as cluster:
        old = cluster.wait_leader()
        applied = KeysApplied()
        cluster.machines[old].add_change_listener(applied)
        cluster.partition(old)
        outcomes: list[Outcome] = []
        for i in range(5):              # appended by the cut-off leader, replicated nowhere
            command = Command(op="update", values={f"lost{i}": encode_value("v", i)})
            cluster.nodes[old].propose(command.encode(), lambda _r, o: outcomes.append(o))
        new = cluster.wait_leader(among=cluster.others(old))
        for i in range(60):             # incompressible: the dump takes several 64 KB chunks
            result = cluster.write(new, {f"k{i}": os.urandom(3000).hex()})
            assert result is not None and result[1] == Outcome.SUCCESS
        wait_for(lambda: cluster.nodes[new].status().compactions > 0,
                 what="the new leader compacted its log")
        cluster.heal()
        wait_for(lambda: cluster.state(old) == cluster.state(new), timeout=20,
                 what="the old leader caught up from the dump")
        early = [c for c in chunks if c[0] is cluster.nodes[old].syncobj and not c[1]]
        assert early, "the dump came in one chunk: the test needs several"
        assert [(before, after) for _, _, before, after in early if after != before] == [], \
            "a chunk before the last moved the commit index over unmatched entries"
        assert not {k for k in applied.keys if k.startswith("lost")}, \
            "the old leader applied entries that were never committed"
        assert Outcome.SUCCESS not in outcomes
        assert not any(k.startswith("lost") for k in cluster.state(new))
