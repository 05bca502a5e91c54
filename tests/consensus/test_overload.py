"""An overloaded leader refuses writes with OverloadedError and keeps its lease.

instance-1 is a StateManager in this process (the bot), instance-2/3 real ``hastate node
run`` processes over TCP. The cluster file sets small ``[limits]`` so the bound is reached
within a second of pipelined writes.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Iterator

import pytest

from pysyncobj.config import FAIL_REASON

from hastate import OverloadedError, StateManager, WriteError
from hastate.state.codec import Command, encode_value
from hastate.testing import LocalCluster
from hastate.testing.embedded import EmbeddedCluster

from .conftest import lead_with_lease

LIMIT = 256


@pytest.fixture
def cluster(request: pytest.FixtureRequest,
            tmp_path: Path) -> Iterator[tuple[LocalCluster, StateManager]]:
    embedded = EmbeddedCluster(tmp_path, 3, name="overload",
                               profile=getattr(request, "param", "lan"))
    with embedded.config_path.open("a") as f:
        f.write(f"\n[limits]\nmax_uncommitted_entries = {LIMIT}\n"
                "max_uncommitted_bytes = 1048576\n")
    with embedded.running(30) as c:
        lead_with_lease(c.sm)
        yield c, c.sm


class LeaseSampler:
    """Samples is_leader() and the term every 10 ms on its own thread."""

    def __init__(self, sm: StateManager) -> None:
        self.sm = sm
        self.samples: list[tuple[bool, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        so = self.sm.node.syncobj
        while not self.stop.wait(0.01):
            self.samples.append((self.sm.is_leader(), so.raftCurrentTerm))

    def finish(self) -> list[tuple[bool, int]]:
        self.stop.set()
        self.thread.join(5)
        return self.samples


def test_overloaded_leader_refuses_with_overloaded_error_and_keeps_its_lease(
        cluster: tuple[LocalCluster, StateManager]) -> None:
    c, sm = cluster
    so = sm.node.syncobj
    term = so.raftCurrentTerm
    sampler = LeaseSampler(sm)
    futures: dict[str, Future] = {}
    refused: list[OverloadedError] = []
    tails: list[tuple[int, int]] = []
    end = time.monotonic() + 6.0
    i = 0
    while time.monotonic() < end:
        key = f"k{i}"
        i += 1
        future = sm.save_state_async({key: "v" * 64}, timeout=20)
        if future.done() and isinstance(future.exception(), OverloadedError):
            refused.append(future.exception())
            time.sleep(min(future.exception().retry_after, 0.05))
            continue
        futures[key] = future
        if i % 50 == 0:
            tails.append((so.last_log_index() - so.raftCommitIndex, so.queued()))
    samples = sampler.finish()
    outcomes = {key: (f.exception(timeout=30) or f.result()) for key, f in futures.items()}
    failed = {k: v for k, v in outcomes.items() if isinstance(v, BaseException)}
    assert refused, "the load never reached the bound: nothing was refused"
    assert all(not e.outcome_unknown and e.retry_after > 0 for e in refused)
    assert not failed, f"accepted writes failed: {list(failed.items())[:3]}"
    # The leader kept its lease in every sample and no election happened.
    assert samples and all(leading for leading, _ in samples), \
        f"lease lost in {sum(not s for s, _ in samples)}/{len(samples)} samples"
    assert {t for _, t in samples} == {term} and so.raftCurrentTerm == term
    # The leader never held more uncommitted or queued than its bound.
    assert max(t for t, _ in tails) <= LIMIT and max(q for _, q in tails) <= LIMIT, tails
    # Accepted writes are applied; refused ones never were.
    state = sm.get_state()
    assert all(key in state for key in futures)
    assert len(state) == len(futures)


# The multi-region profile's 1.5 s step-down timer leaves a busy machine time to fill the
# queue before the leader, hearing from no majority, rightly steps down.
@pytest.mark.parametrize("cluster", ["multi-region"], indirect=True)
def test_full_leader_queue_refuses_with_overloaded_error_that_never_applies(
        cluster: tuple[LocalCluster, StateManager]) -> None:
    """With no follower answering nothing commits: the leader's queue fills to its bound,
    PySyncObj answers QUEUE_FULL, and the write is refused as certainly not applied."""
    c, sm = cluster
    for node_id in ("instance-2", "instance-3"):
        c.kill(node_id, signal.SIGSTOP)
    full = threading.Event()
    errors: list[int] = []

    def note(_result: object, err: int) -> None:
        if err:
            errors.append(err)
            full.set()

    def raw(key: str) -> bytes:
        return Command(op="update", client=b"filler-client-16", seq=int(key[1:]) + 1,
                       values={key: encode_value(key, "x")}).encode()

    # Fill the leader's uncommitted tail and queue to the bound, as forwarded writes would.
    # Both bounds count commands, also when waiting ones share a log entry.
    so = sm.node.syncobj
    term = so.raftCurrentTerm
    n = 0
    deadline = time.monotonic() + 10
    while not (full.is_set() and so.queued() == LIMIT and so.uncommitted()[0] >= LIMIT):
        assert time.monotonic() < deadline, (n, so.queued(), errors[:5])
        assert so.role == "leader" and so.raftCurrentTerm == term, \
            f"the leader stepped down before its queue filled ({n} proposed): too slow a machine"
        sm.node.propose(raw(f"f{n}"), note)
        n += 1
    assert n - len(errors) == 2 * LIMIT, "the leader took more than its bound"
    assert set(errors) == {FAIL_REASON.QUEUE_FULL}
    with pytest.raises(OverloadedError) as refused:
        sm.engine.writes.propose(raw("r999999"), 5.0).result()
    assert refused.value.outcome_unknown is False
    for node_id in ("instance-2", "instance-3"):
        c.kill(node_id, signal.SIGCONT)
    # Once the followers answer, the queued writes commit; the refused one never does.
    c.wait_ready(["instance-2", "instance-3"], timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            sm.save_state({"marker": 1}, timeout=10)
            break
        except WriteError:
            assert time.monotonic() < deadline
    state = sm.get_state()
    assert "r999999" not in state


def test_lease_sampler_sees_a_lost_lease(cluster: tuple[LocalCluster, StateManager]) -> None:
    """Negative control: the sampler used above does report a leader that lost its lease."""
    c, sm = cluster
    sampler = LeaseSampler(sm)
    time.sleep(0.2)
    for node_id in ("instance-2", "instance-3"):
        c.kill(node_id, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while sm.is_leader():
        assert time.monotonic() < deadline, "the leader kept its lease with no follower"
        time.sleep(0.01)
    time.sleep(0.1)
    for node_id in ("instance-2", "instance-3"):
        c.kill(node_id, signal.SIGCONT)
    samples = sampler.finish()
    assert samples[0][0] and not all(leading for leading, _ in samples)
