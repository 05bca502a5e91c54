"""Health-driven failover on Firestore, as configure_failover promises: a leader whose
health check fails hands leadership to a healthy bot, and takes no lease while it stays
unhealthy, even when it is the last bot running (safety over liveness, as on Raft)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.testing import wait_for
from hastate.testing.firestore import FirestoreEmulator, cluster_file

from .conftest import started

pytestmark = pytest.mark.integration

IDS = ["bot-1", "bot-2", "bot-3"]


@pytest.fixture
def bots(emulator: FirestoreEmulator, tmp_path: Path) -> Iterator[dict[str, StateManager]]:
    config = cluster_file(tmp_path / "cluster.toml", name="failover", ids=IDS)
    with started(config, IDS) as managers:
        yield managers


def test_an_unhealthy_leader_hands_over_to_a_healthy_bot_and_stays_out(
        bots: dict[str, StateManager]) -> None:
    wait_for(lambda: [sm.is_leader() for sm in bots.values()].count(True) == 1, timeout=30,
             what="one leader")
    sick = next(i for i, sm in bots.items() if sm.is_leader())
    token = bots[sick].fencing_token()
    healthy = threading.Event()
    bots[sick].configure_failover(health_check_interval=0.5, failover_timeout=1.0,
                                  health_check=healthy.is_set)
    wait_for(lambda: any(sm.is_leader() for i, sm in bots.items() if i != sick), timeout=30,
             what="a healthy bot leading")
    new = next(sm for i, sm in bots.items() if i != sick and sm.is_leader())
    assert new.fencing_token() > token and not bots[sick].is_leader()
    became: list[int] = []
    bots[sick].watch_leader(on_become_leader=became.append)
    for i, sm in bots.items():           # the healthy bots go away, releasing the lease
        if i != sick:
            sm.stop()
    time.sleep(3)                        # more than a lease TTL: the lease is free
    assert became == [] and not bots[sick].is_leader(), "the unhealthy bot took the lease"
