"""The seed's usage code (the README's first example) runs unchanged in three bot processes
whose cluster file puts the state on etcd (``[cluster] engine = "etcd"``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

from hastate.testing.etcd import EtcdCluster, write_cluster_file

pytestmark = pytest.mark.integration

IDS = ("instance-1", "instance-2", "instance-3")
REGIONS = {"instance-1": "asia-northeast1", "instance-2": "us-central1",
           "instance-3": "europe-west1"}


def seed_scenario() -> ModuleType:
    """tests/integration/test_seed_snippet.py: its bot harness and its scenario, which takes
    the three running bots of any cluster file."""
    path = Path(__file__).resolve().parents[2] / "integration" / "test_seed_snippet.py"
    spec = importlib.util.spec_from_file_location("seed_snippet_scenario", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def etcd_bots(etcd_store: EtcdCluster, tmp_path: Path) -> Iterator[dict]:
    seed = seed_scenario()
    config = write_cluster_file(tmp_path / "cluster.toml", etcd_store.endpoints,
                                name="crypto-bot-prod", ids=IDS, regions=REGIONS)
    started = {i: seed.Bot(tmp_path, i, REGIONS[i], config) for i in IDS}
    try:
        yield started
    finally:
        for bot in started.values():
            bot.stop()


def test_seed_code_runs_unchanged_on_etcd(etcd_bots: dict) -> None:
    seed_scenario().test_seed_code_runs_unchanged_in_three_processes(etcd_bots)
