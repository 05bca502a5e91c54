"""A real three-member etcd on loopback per test module, and bots built on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from hastate import StateManager
from hastate.testing.etcd import EtcdCluster, require_etcd, write_cluster_file


@pytest.fixture(scope="module")
def etcd_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as store:
        yield store


class Bots:
    """Managers started on ``etcd_store``; stopped at the end of the test."""

    def __init__(self, store: EtcdCluster, workdir: Path) -> None:
        self.store = store
        self.workdir = workdir
        self.started: list[StateManager] = []

    def config(self, name: str, endpoints: list[str] | None = None, **kwargs: Any) -> Path:
        return write_cluster_file(self.workdir / f"{name}.toml",
                                  endpoints or self.store.endpoints, name=name, **kwargs)

    def start(self, config: Path, instance: str, **kwargs: Any) -> StateManager:
        sm = StateManager.from_config(config, instance, serve_http=False,
                                      write_timeout=kwargs.pop("write_timeout", 15.0), **kwargs)
        self.started.append(sm)
        return sm.start()

    def stop(self) -> None:
        for sm in self.started:
            sm.stop()


@pytest.fixture
def bots(etcd_store: EtcdCluster, tmp_path: Path) -> Iterator[Bots]:
    running = Bots(etcd_store, tmp_path)
    try:
        yield running
    finally:
        running.stop()
