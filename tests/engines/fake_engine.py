"""A minimal in-process engine for Protocol conformance tests of engine-neutral code.

Three :class:`FakeEngine` instances share one :class:`FakeStore`: hastate's pure state
machine (the same command semantics every engine keeps) and a leader id the store hands
over on :meth:`FakeEngine.transfer`. No Raft, no log, no disk: whatever the endpoints, the
CLI or the logs read through it, they read through the :class:`~hastate.engines.contract.Engine`
contract only. Not a real store: it proves the plumbing above the contract, not a guarantee.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import uuid
from concurrent.futures import Future
from typing import Any, Callable, Iterable, TypeVar

from hastate.consensus.membership import Member
from hastate.errors import NotSupportedError
from hastate.state.codec import Command
from hastate.state.export import StateExport
from hastate.state.leases import LeaseInfo
from hastate.state.machine import ReplicatedState
from hastate.state.txn import Record
from hastate.state.watch import Watcher, WatchHub

T = TypeVar("T")


class FakeStore:
    """The shared store: one state machine, its watch hub, the leader's id."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = sorted(ids)
        self.machine = ReplicatedState()
        self.hub = WatchHub(1000, 1000)
        self.machine.add_change_listener(self.hub)
        self.leader = self.ids[0]
        self.epoch = 1
        self._index = itertools.count(1)
        self.lock = threading.Lock()

    def apply(self, command: Command) -> tuple:
        with self.lock:
            return self.machine.apply_at(next(self._index), command.encode())


class FakeEngine:
    """One instance's handle on a :class:`FakeStore` (implements the Engine Protocol)."""

    name = "fake"

    def __init__(self, store: FakeStore, instance_id: str) -> None:
        self.store = store
        self.instance_id = instance_id
        self.client = uuid.uuid4().bytes
        self._seq = itertools.count(1)
        self._running = False
        self._healthy: dict[str, bool] = {}

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def ready(self) -> bool:
        return self._running

    def healthy(self) -> bool:
        return self._running

    def fatal_error(self) -> str | None:
        return None

    def submit(self, command: Command, timeout: float,
               finish: Callable[[tuple], T]) -> "Future[T]":
        if command.op.startswith("lock_"):
            raise NotSupportedError(self.name, command.op, "the fake engine has no lock table")
        command = dataclasses.replace(command, client=self.client, seq=next(self._seq))
        future: Future[T] = Future()
        try:
            future.set_result(finish(self.store.apply(command)))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def read(self, keys: Iterable[str] | None, consistency: str,
             timeout: float | None) -> tuple[dict[str, Any], int]:
        return self.store.machine.snapshot_at(keys)

    def records(self, keys: Iterable[str]) -> dict[str, Record]:
        return self.store.machine.records(keys)

    def scan(self, prefix: str) -> tuple[list[tuple[str, Record]], int]:
        return self.store.machine.scan(prefix)

    def add_change_listener(self, listener: Any) -> None:
        self.store.machine.add_change_listener(listener)

    def revisions(self) -> dict[str, int]:
        return self.store.machine.revisions()

    def revision(self) -> int:
        return self.store.machine.revision

    def key_count(self) -> int:
        return len(self.store.machine)

    def state_hash(self) -> str:
        return self.store.machine.state_hash()

    def export(self, timeout: float | None) -> StateExport:
        return self.store.machine.export()

    def leases(self) -> dict[int, LeaseInfo]:
        return self.store.machine.leases()

    def has_lease(self, lease_id: int) -> bool:
        return self.store.machine.has_lease(lease_id)

    def lease_expiry(self) -> dict[int, float]:
        return {}

    def watch(self, prefix: str, start_revision: int | None, *, prev_value: bool,
              progress_interval: float | None, buffer: int | None) -> Watcher:
        return self.store.hub.watch(prefix, start_revision, prev_value=prev_value,
                                    progress_interval=progress_interval, buffer=buffer)

    def watchers(self) -> int:
        return len(self.store.hub)

    def is_leader(self) -> bool:
        return self._running and self.store.leader == self.instance_id

    def fencing_token(self) -> int | None:
        return self.store.epoch if self.is_leader() else None

    def leader(self) -> str | None:
        return self.store.leader

    def transfer(self, target: str, timeout: float | None) -> float:
        with self.store.lock:
            if target != self.store.leader:
                self.store.leader, self.store.epoch = target, self.store.epoch + 1
        return 0.0

    def failover_candidates(self, fresh_after: float | None) -> list[tuple[int, str]]:
        return [(0, i) for i in self.store.ids if i != self.instance_id]

    def publish_health(self, ok: bool) -> None:
        self._healthy[self.instance_id] = ok

    def members(self) -> list[Member]:
        return []

    def change_membership(self, action: str, member: Member | str, timeout: float) -> int:
        raise NotSupportedError(self.name, "membership", "the fake store's members are fixed")

    def status(self) -> dict[str, Any]:
        leading = self.is_leader()
        return {"role": "leader" if leading else "follower", "is_leader": leading,
                "leader": self.store.leader, "fencing_token": self.fencing_token(),
                "term": self.store.epoch,
                "members": [{"id": i} for i in self.store.ids]}

    def log_context(self) -> dict[str, Any]:
        return {"term": self.store.epoch,
                "role": "leader" if self.is_leader() else "follower"}
