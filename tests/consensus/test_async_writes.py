"""save_state_async across a leader's kill -9: each acknowledged write applied exactly once.

instance-1 (this process) is a follower writing pipelined futures, forwarded to the leader
instance-2, a real process that is killed mid-stream and restarted. Every key is written
once, so a write applied twice would move the key's revision past the index its future
returned (the dedup table answers a retry with the first application's index).
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Iterator

import pytest

from hastate import OverloadedError, StateManager, WriteError
from hastate.testing import LocalCluster
from hastate.testing.embedded import EmbeddedCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, StateManager]]:
    embedded = EmbeddedCluster(tmp_path, 3, name="asyncw")
    with embedded.running(30, write_timeout=30.0) as c:
        c.make_leader("instance-2", timeout=20)
        yield c, c.sm


def test_pipelined_writes_survive_a_leader_kill_exactly_once(
        cluster: tuple[LocalCluster, StateManager]) -> None:
    c, sm = cluster
    futures: dict[str, Future] = {}
    killed = restarted = False
    term = sm.node.syncobj.raftCurrentTerm
    start = time.monotonic()
    i = 0
    while i < 3000:
        window = [f for f in futures.values() if not f.done()]
        if len(window) >= 64:
            window[0].exception(60)
            continue
        key = f"k{i}"
        futures[key] = sm.save_state_async({key: i})
        i += 1
        if i == 800 and not killed:
            c.kill("instance-2", signal.SIGKILL)   # the leader, mid-stream
            killed = True
        if i == 1600 and not restarted:
            c.start("instance-2")
            restarted = True
    outcomes = {key: f.exception(90) or f.result() for key, f in futures.items()}
    assert time.monotonic() - start < 180
    acked = {k: v for k, v in outcomes.items() if isinstance(v, int)}
    refused = {k for k, v in outcomes.items()
               if isinstance(v, WriteError) and not v.outcome_unknown}
    unknown = {k for k, v in outcomes.items()
               if isinstance(v, WriteError) and v.outcome_unknown}
    others = set(outcomes) - set(acked) - refused - unknown
    assert not others, [outcomes[k] for k in list(others)[:3]]
    assert all(isinstance(outcomes[k], OverloadedError) or "not applied" in str(outcomes[k])
               for k in refused)
    assert sm.node.syncobj.raftCurrentTerm > term and sm.leader() != "instance-2"
    assert len(acked) > 2000, f"only {len(acked)} of 3000 writes acknowledged"
    sm.save_state({"marker": 1})                     # everything before is now applied here
    revisions = sm.revisions()
    state = sm.get_state()
    # Exactly once: each acknowledged write is there, last changed at the index it returned.
    wrong = {k: (acked[k], revisions.get(k)) for k in acked if revisions.get(k) != acked[k]}
    assert not wrong, list(wrong.items())[:5]
    assert all(state[k] == int(k[1:]) for k in acked)
    # Certainly-not-applied writes never were.
    assert not refused & set(state)
    c.wait_ready(["instance-2", "instance-3"], timeout=60)
    last = sm.node.syncobj.raftCommitIndex
    deadline = time.monotonic() + 60
    while not all((c.status(n) or {}).get("applied_index", 0) >= last
                  for n in ("instance-2", "instance-3")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hashes = {(c.state(n, "local") or {}).get("state_hash") for n in ("instance-2",
                                                                      "instance-3")}
    assert hashes == {sm.machine.state_hash()}
