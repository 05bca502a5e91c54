"""Fixtures for consensus tests: a factory of process clusters, all killed at teardown."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from hastate import StateManager

from .harness import ProcCluster


def on_tick_thread(sm: StateManager, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on ``sm``'s Raft tick thread (where PySyncObj state may be touched)."""
    done, box = threading.Event(), []
    sm.node.call_soon(lambda: (box.append(fn()), done.set()))
    assert done.wait(5)
    return box[0]


def lead_with_lease(sm: StateManager, timeout: float = 15.0) -> None:
    """Make ``sm`` the leader and wait until it holds the lease (caught up in its term)."""
    if not sm.is_leader():
        sm.trigger_failover(sm.instance_id, timeout=20)
    deadline = time.monotonic() + timeout
    while not (sm.is_leader() and sm.node.syncobj.caught_up_in_term()):
        assert time.monotonic() < deadline, f"{sm.instance_id} never led with its lease"
        time.sleep(0.02)


@pytest.fixture
def proc_cluster(tmp_path: Path) -> Iterator[Callable[..., ProcCluster]]:
    """``proc_cluster(engine, **options)`` returns a started cluster; teardown kills it."""
    clusters: list[ProcCluster] = []

    def make(engine: str, **options: Any) -> ProcCluster:
        workdir = tmp_path / f"{engine}-{len(clusters)}"
        workdir.mkdir()
        cluster = ProcCluster(workdir, engine, **options)
        clusters.append(cluster)
        cluster.start_all()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()
