"""A follower that falls behind catches up while the load goes on; its lag is visible.

instance-1 (this process) leads and compacts its log every 300 entries; instance-3 is
paused (SIGSTOP) long enough for the leader to compact past it, so it needs the leader's
dump, then resumed while pipelined writes continue. Real processes over TCP.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Iterator

import pytest

from hastate import OverloadedError, StateManager
from hastate.observability.metrics import NodeMetrics
from hastate.testing import LocalCluster
from hastate.testing.embedded import EmbeddedCluster

from .conftest import lead_with_lease

COMPACT_EVERY = 300
#: Entries the leader commits while the follower is paused (pipelined writes share entries,
#: so this takes several times as many writes).
PAUSED_ENTRIES = 1000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, StateManager]]:
    embedded = EmbeddedCluster(tmp_path, 3, name="catchup")
    with embedded.running(30, log_compaction_entries=COMPACT_EVERY) as c:
        lead_with_lease(c.sm)
        yield c, c.sm


class Load:
    """Pipelined save_state_async, at most 64 in flight, until stopped."""

    def __init__(self, sm: StateManager) -> None:
        self.sm = sm
        self.stop = threading.Event()
        self.acked: list[str] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        window: list[tuple[str, Future]] = []
        i = 0
        while not self.stop.is_set() or window:
            if not self.stop.is_set() and len(window) < 64:
                key = f"k{i}"
                i += 1
                window.append((key, self.sm.save_state_async({key: i}, timeout=30)))
                continue
            key, future = window.pop(0)
            exc = future.exception(60)
            if exc is None:
                self.acked.append(key)
            elif isinstance(exc, OverloadedError):
                time.sleep(exc.retry_after)
            else:
                self.errors.append(exc)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(90)


def test_paused_follower_catches_up_through_the_dump_while_writes_continue(
        cluster: tuple[LocalCluster, StateManager]) -> None:
    c, sm = cluster
    so = sm.node.syncobj
    load = Load(sm)
    try:
        _until("writes flowing", lambda: len(load.acked) > 200, 30)
        c.kill("instance-3", signal.SIGSTOP)
        paused_at = so.raftCommitIndex
        # The leader compacts past the paused follower: entries alone cannot catch it up.
        _until("the leader's log to start past the paused follower",
               lambda: so._SyncObj__raftLog[0][1] > (so.match_index().get(
                   c.raft["instance-3"]) or 0)
               and so.raftCommitIndex > paused_at + PAUSED_ENTRIES, 60)
        lag = sm.status()["peers"]["instance-3"]["lag"]
        assert lag > COMPACT_EVERY
        scraped = NodeMetrics(sm).render().decode()
        series = 'hastate_peer_lag_entries{node="instance-1",peer="instance-3"} '
        line = next(ln for ln in scraped.splitlines() if ln.startswith(series))
        assert float(line.split()[-1]) > COMPACT_EVERY
        c.kill("instance-3", signal.SIGCONT)
        resumed_at = so.raftCommitIndex

        # While the load goes on, the follower gets past where it was resumed and its lag
        # shrinks to under a thousand entries, as the leader and the follower both see.
        def caught_up() -> bool:
            st3 = c.status("instance-3") or {}
            peer = sm.status()["peers"]["instance-3"]
            return st3.get("applied_index", 0) > resumed_at and peer["lag"] is not None and \
                peer["lag"] < 1000 and st3.get("behind_leader_entries", 10**9) < 1000
        _until("instance-3 to catch up under load", caught_up, 90)
        assert not load.stop.is_set()
        acked_while_catching_up = len(load.acked)
        _until("more writes after the catch-up",
               lambda: len(load.acked) > acked_while_catching_up + 200, 30)
    finally:
        load.finish()
    assert not load.errors, load.errors[:3]
    # Every member ends with the same state, holding every acknowledged write.
    last = sm.node.syncobj.raftCommitIndex
    _until("every member to apply the last write",
           lambda: all((c.status(i) or {}).get("applied_index", 0) >= last
                       for i in ("instance-2", "instance-3")), 60)
    hashes = {i: (c.state(i, "local") or {}).get("state_hash") for i in ("instance-2",
                                                                          "instance-3")}
    assert set(hashes.values()) == {sm.machine.state_hash()}, hashes
    state = sm.get_state()
    assert all(key in state for key in load.acked)
    assert (c.status("instance-3") or {}).get("behind_leader_entries") == 0


def _until(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)
