"""The seed's usage code (the README's first example) runs unchanged in three bot processes
on a Firestore-backed cluster file: the same scenario as tests/integration's seed test,
only the cluster file names ``engine = "firestore"``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import pytest

from hastate import load_config
from hastate.testing.firestore import FirestoreEmulator, cluster_file

pytestmark = pytest.mark.integration

_SEED = Path(__file__).resolve().parents[2] / "integration" / "test_seed_snippet.py"
_spec = importlib.util.spec_from_file_location("seed_scenario", _SEED)
seed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed)


@pytest.fixture
def bots(emulator: FirestoreEmulator, tmp_path: Path) -> Iterator[dict[str, "seed.Bot"]]:
    ids = ["instance-1", "instance-2", "instance-3"]
    config = cluster_file(tmp_path / "cluster.toml", name="crypto-bot-prod", ids=ids)
    regions = {n.id: n.region for n in load_config(config).nodes}
    started = {i: seed.Bot(tmp_path, i, regions[i], config) for i in ids}
    try:
        yield started
    finally:
        for bot in started.values():
            bot.stop()


def test_seed_code_runs_unchanged_in_three_processes_on_firestore(
        bots: dict[str, "seed.Bot"]) -> None:
    seed.test_seed_code_runs_unchanged_in_three_processes(bots)
