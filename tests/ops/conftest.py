"""A three-node cluster for ops tests: instance-1 embedded (the bot, with its own HTTP
server, so the test can write), instance-2 and instance-3 real ``hastate node run``
processes. Helpers scrape and parse /metrics with prometheus-client's parser."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hastate.testing.embedded import EmbeddedCluster

REPO = Path(__file__).resolve().parents[2]


class OpsCluster(EmbeddedCluster):
    """The embedded-plus-processes cluster, with /metrics scraping."""

    def scrape(self, node_id: str) -> dict[str, Any]:
        return scrape(self.http[node_id])


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


@pytest.fixture(scope="package")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsCluster]:
    """Shared by the package's tests; tests leave it with all three nodes running."""
    root = tmp_path_factory.mktemp("ops")
    with OpsCluster(root, 3, name="ops", snapshot_store=f"file://{root / 'store'}",
                    snapshot_interval=60).running() as cluster:
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
