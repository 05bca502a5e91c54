"""Three bots on one engine, for the engine contract suite.

A deployment starts whatever store the engine needs (nothing for ``raft``: the three bots
are its cluster), writes the cluster file and builds one started
:class:`~hastate.StateManager` per instance, all in this process; the store's members, if
any, are real processes. Each engine adds its builder to :data:`DEPLOYMENTS`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator


from hastate import StateManager
from hastate.testing import LocalCluster
from hastate.testing import etcd as etcd_store
from hastate.testing.etcd import write_cluster_file
from hastate.testing import firestore as firestore_emulator


@dataclass
class Deployment:
    """Three started managers of one cluster (instance id -> manager) and its file."""

    engine: str
    config: Path
    managers: dict[str, StateManager] = field(default_factory=dict)

    def leader(self, timeout: float = 20.0) -> StateManager:
        """The one manager that may act, once exactly one may."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leading = [sm for sm in self.managers.values() if sm.is_leader()]
            if len(leading) == 1:
                return leading[0]
            time.sleep(0.05)
        raise AssertionError(f"no single leader within {timeout}s on {self.engine}")

    def followers(self) -> list[StateManager]:
        """The managers that are not the leader now."""
        leader = self.leader()
        return [sm for sm in self.managers.values() if sm is not leader]


@contextlib.contextmanager
def deployed(engine: str, config: Path, ids: list[str]) -> Iterator[Deployment]:
    """One started manager per instance id of ``config``, once one leads; all stopped on
    exit."""
    deployment = Deployment(engine, config)
    try:
        for instance in ids:
            deployment.managers[instance] = StateManager.from_config(
                config, instance, serve_http=False, write_timeout=15.0)
        for sm in deployment.managers.values():
            sm.start()
        deployment.leader()
        yield deployment
    finally:
        for sm in deployment.managers.values():
            sm.stop()


@contextlib.contextmanager
def raft(workdir: Path) -> Iterator[Deployment]:
    """The embedded engine: the three bots are the Raft cluster."""
    cluster = LocalCluster(workdir, name="contract")
    with deployed("raft", cluster.config_path, cluster.ids) as deployment:
        yield deployment


@contextlib.contextmanager
def etcd(workdir: Path) -> Iterator[Deployment]:
    """Three bots on a real three-member etcd cluster (Debian's etcd-server) on loopback."""
    with etcd_store.running(workdir) as store:
        config = write_cluster_file(workdir / "cluster.toml", store.endpoints)
        with deployed("etcd", config, ["instance-1", "instance-2", "instance-3"]) as deployment:
            yield deployment


@contextlib.contextmanager
def firestore(workdir: Path) -> Iterator[Deployment]:
    """Three bots on one real Firestore emulator (started here, stopped at the end)."""
    with firestore_emulator.running(workdir):
        ids = ["bot-1", "bot-2", "bot-3"]
        config = firestore_emulator.cluster_file(workdir / "cluster.toml", name="contract",
                                                 ids=ids)
        with deployed("firestore", config, ids) as deployment:
            yield deployment


#: engine name -> builder of a running deployment (skips, loudly, when its store is missing).
DEPLOYMENTS: dict[str, Callable[[Path], ContextManager[Deployment]]] = {
    "raft": raft,
    "etcd": etcd,
    "firestore": firestore,
}
