"""A cluster moves raft -> another engine -> raft with ``hastate snapshot take`` and
``hastate restore --into-running``, the runbook of docs/engines.md; the middle engine is
the in-process fake (Protocol conformance: the path reads and writes through the contract
only), so the same commands serve etcd and Firestore."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from hastate import StateManager, engines
from hastate.cli import cli
from hastate.testing import LocalCluster, wait_for
from hastate.testing.cluster import ADMIN_TOKEN_ENV
from hastate.testing.engine_files import write_engine_file

from .fake_engine import FakeEngine, FakeStore


@contextlib.contextmanager
def one_bot(config: Path) -> Iterator[StateManager]:
    with StateManager.from_config(config, "instance-1", write_timeout=15.0) as sm:
        wait_for(sm.is_leader, timeout=30, what="instance-1 leads")
        yield sm


def move(source: Path, target: Path, store: str) -> dict:
    taken = CliRunner().invoke(cli, ["snapshot", "take", "--config", str(source), "--to",
                                     store, "--json"])
    assert taken.exit_code == 0, taken.output
    loaded = CliRunner().invoke(cli, ["restore", "--config", str(target), "--into-running",
                                      "--from", store, "--json"])
    assert loaded.exit_code == 0, loaded.output
    return json.loads(loaded.output)


def test_a_cluster_moves_to_another_engine_and_back(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "move-token")
    fake = FakeStore(["instance-1"])
    monkeypatch.setattr(engines, "open_engine",
                        lambda cfg, instance, options: FakeEngine(fake, instance))
    raft_a = LocalCluster(tmp_path / "a", 1, name="bot").config_path
    other = write_engine_file(tmp_path / "b", name="bot", engine="etcd", http=True,
                              settings={}, ids=["instance-1"])
    raft_c = LocalCluster(tmp_path / "c", 1, name="bot").config_path
    with one_bot(raft_a) as sm:
        lease = sm.grant_lease(90)
        sm.save_state({"pos": {"BTC": 0.5}, "model": "v1.2.3"})
        sm.save_state({"presence/instance-1": True}, lease=lease)
        state = sm.get_state()
        with one_bot(other) as middle:
            assert move(raft_a, other, f"file://{tmp_path}/to-other")["keys"] == 3
            assert middle.engine.name == "fake" and middle.get_state() == state
            with one_bot(raft_c) as back:
                assert move(other, raft_c, f"file://{tmp_path}/back")["leases"] == 1
                assert back.get_state() == state
                (info,) = back.leases().values()
                assert info.ttl == 90 and info.keys == {"presence/instance-1"}
