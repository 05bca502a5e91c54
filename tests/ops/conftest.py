"""A three-node cluster for ops tests: instance-1 embedded (the bot, serving its node's HTTP
endpoints itself, so the test can write), instance-2 and instance-3 real ``hastate node run``
processes. Helpers scrape and parse /metrics with prometheus-client's parser."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hastate import StateManager
from hastate.testing import LocalCluster
from hastate.testing.cluster import ADMIN_TOKEN_ENV

REPO = Path(__file__).resolve().parents[2]


class OpsCluster(LocalCluster):
    """LocalCluster whose instance-1 runs in the test process with its HTTP endpoints."""

    sm: StateManager | None = None

    def start_embedded(self) -> StateManager:
        self.sm = StateManager.from_config(self.config_path, "instance-1",
                                           admin_token=self.admin_token)
        self.sm.start()
        return self.sm

    def stop_embedded(self) -> None:
        if self.sm is not None:
            self.sm.stop()
            self.sm = None

    def leader(self, among: Sequence[str] | None = None) -> str | None:
        """As LocalCluster.leader, but the embedded instance-1 counts too."""
        running = [n for n in self.ids if n in self.procs or (n == "instance-1" and self.sm)]
        return super().leader(among or running)

    def resume_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)

    def scrape(self, node_id: str) -> dict[str, Any]:
        return scrape(self.http[node_id])

    def cli(self, *args: str, token: str | None = None, timeout: float = 60) -> \
            subprocess.CompletedProcess[str]:
        """Run ``hastate ARGS`` as a subprocess with the admin token in its environment."""
        env = dict(os.environ)
        env[ADMIN_TOKEN_ENV] = self.admin_token if token is None else token
        return subprocess.run([sys.executable, "-m", "hastate", *args], capture_output=True,
                              text=True, env=env, timeout=timeout)


def scrape(http: str) -> dict[str, Any]:
    """Metric families of one node's /metrics, by family name."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float | None:
    """Value of the sample ``name`` (exposition name, e.g. ``x_total``) with ``labels``."""
    family = name
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            family = name[: -len(suffix)]
    for s in families[family].samples if family in families else ():
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


@contextlib.contextmanager
def running(cluster: OpsCluster, timeout: float = 20.0) -> Iterator[OpsCluster]:
    """Start instance-1 embedded and the others as processes; stop all of them on exit."""
    try:
        cluster.start_embedded()
        for node_id in cluster.ids[1:]:
            cluster.start(node_id)
        cluster.sm.wait_ready(timeout)
        cluster.wait_ready(timeout=timeout)
        yield cluster
    finally:
        cluster.resume_all()
        cluster.stop_all()
        cluster.stop_embedded()


@pytest.fixture(scope="package")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsCluster]:
    """Shared by the package's tests; tests leave it with all three nodes running."""
    root = tmp_path_factory.mktemp("ops")
    with running(OpsCluster(root, 3, name="ops", snapshot_store=f"file://{root / 'store'}",
                            snapshot_interval=60)) as cluster:
        yield cluster


@pytest.fixture
def plain_cluster(tmp_path: Path) -> Iterator[OpsCluster]:
    """Three real node processes, no snapshot store, for destructive tests."""
    cluster = OpsCluster(tmp_path, 3, name="ops-plain")
    try:
        cluster.start_all()
        cluster.wait_ready(timeout=20)
        cluster.wait_leader()
        yield cluster
    finally:
        cluster.resume_all()
        cluster.stop_all()
