"""Fixtures for consensus tests: a factory of process clusters, all killed at teardown."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .harness import ProcCluster


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
