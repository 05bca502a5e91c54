"""A three-node cluster: instance-1 embedded in the test process, instance-2/3 real processes."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.testing import LocalCluster


class Cluster(LocalCluster):
    """LocalCluster whose instance-1 is a StateManager inside the test (the embedded bot)."""

    sm: StateManager

    def embedded(self) -> StateManager:
        self.sm = StateManager.from_config(self.config_path, "instance-1")
        self.sm.start()
        return self.sm

    def make_leader(self, node_id: str) -> None:
        self.sm.trigger_failover(node_id, timeout=15)

    def resume_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGCONT)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 3, name="itest")
    c.sm = StateManager.from_config(c.config_path, "instance-1")
    try:
        c.sm.start()
        for node_id in ("instance-2", "instance-3"):
            c.start(node_id)
        c.sm.wait_ready(20)
        c.wait_ready(["instance-2", "instance-3"], timeout=20)
        yield c
    finally:
        c.resume_all()
        c.stop_all()
        c.sm.stop()
