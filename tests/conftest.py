"""Suite-wide test policy, and the real-process clusters tests of several packages share."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from hastate.testing.embedded import EmbeddedCluster


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Campaigns (``@pytest.mark.chaos``) run only when asked: ``tox -e chaos`` (``-m chaos``)."""
    if "chaos" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="chaos campaign: run with tox -e chaos (-m chaos)")
    for item in items:
        if item.get_closest_marker("chaos"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """instance-1 embedded with its HTTP endpoints, instance-2/3 ``hastate node run``
    processes, a file snapshot store; shared by a module's tests, which leave all three
    nodes running."""
    root = tmp_path_factory.mktemp("ops")
    with EmbeddedCluster(root, 3, name="ops", snapshot_store=f"file://{root / 'store'}",
                         snapshot_interval=60).running() as cluster:
        yield cluster


@pytest.fixture
def plain_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """Three real node processes, no snapshot store, for destructive tests."""
    cluster = EmbeddedCluster(tmp_path, 3, name="ops-plain")
    try:
        cluster.start_all()
        cluster.wait_ready(timeout=20)
        cluster.wait_leader()
        yield cluster
    finally:
        cluster.resume_all()
        cluster.stop_all()
