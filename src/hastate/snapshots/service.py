"""Disaster recovery on a running node: periodic snapshots and log shipping by the leader.

Every node runs the service; only the node holding the leader lease acts, so a new leader
takes the schedule over by itself. Capturing the state is a shallow copy (no Raft stall);
encoding and uploading happen on the uploader's thread, so a slow or dead store never
slows writes: failures show in ``status()`` and metrics.

``[snapshots] mirrors`` are further stores (another cloud) that get the same snapshots and
segments, each through its own uploader and shipper threads: a failing mirror only shows
up in its own status, it never delays the primary store or another mirror.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from hastate.config import SnapshotConfig
from hastate.snapshots.segments import LogShipper
from hastate.snapshots.store import SnapshotStore
from hastate.snapshots.stores import open_store
from hastate.snapshots.uploader import SnapshotUploader
from hastate.state.machine import ReplicatedState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    """One store the leader ships to, with its own upload and shipping threads."""

    store: SnapshotStore
    uploader: SnapshotUploader
    shipper: LogShipper

    def start(self) -> None:
        self.uploader.start()
        self.shipper.start()

    def stop(self) -> None:
        self.shipper.stop()
        self.uploader.stop(timeout=10)

    def status(self, applied_index: int) -> dict[str, Any]:
        """Upload and shipping health of this store."""
        up = self.uploader.status()
        ship = self.shipper.status()
        age = None if up.last_success_at is None else time.time() - up.last_success_at
        shipped = ship["shipped_index"]
        return {
            "store": str(self.store),
            "last_index": up.last_index, "age_seconds": age, "uploads_total": up.uploads_total,
            "failures_total": up.failures_total, "skipped_total": up.skipped_total,
            "dropped_total": up.dropped_total, "last_error": up.last_error,
            "last_success_at": up.last_success_at,
            "last_duration_seconds": up.last_duration_s, "last_size_bytes": up.last_size_bytes,
            "shipping": {**ship, "lag_entries": None if shipped is None else
                         max(0, applied_index - shipped)},
        }


class SnapshotService:
    """Leader-only snapshot schedule plus log shipping for one node."""

    def __init__(self, settings: SnapshotConfig, *, cluster: str, machine: ReplicatedState,
                 is_leader: Callable[[], bool], term: Callable[[], int],
                 store: SnapshotStore | None = None) -> None:
        if settings.store is None and store is None:
            raise ValueError("SnapshotService needs [snapshots] store")
        self.settings = settings
        self._machine = machine
        self._is_leader = is_leader
        self._term = term
        self._cluster = cluster
        primary = self._target(store or open_store(settings.store))
        self.mirrors = [self._target(open_store(url)) for url in settings.mirrors]
        self._targets = [primary, *self.mirrors]
        self.store = primary.store
        self.uploader = primary.uploader
        self.shipper = primary.shipper
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _target(self, store: SnapshotStore) -> _Target:
        """Uploader and shipper for ``store``, the shipper fed by every applied command."""
        target = _Target(
            store=store,
            uploader=SnapshotUploader(store, cluster=self._cluster, keep=self.settings.keep),
            shipper=LogShipper(store, cluster=self._cluster,
                               interval=self.settings.ship_interval,
                               is_leader=self._is_leader, term=self._term,
                               on_gap=self.request))
        self._machine.add_listener(target.shipper.on_apply)
        return target

    def start(self) -> None:
        """Start every store's uploader and shipper, then the schedule."""
        for target in self._targets:
            target.start()
        self._thread = threading.Thread(target=self._run, name="hastate-snapshots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the schedule, ship the tail (if leading) and stop the uploader."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        for target in self._targets:
            target.stop()

    def request(self) -> None:
        """Take a snapshot at the next opportunity (e.g. the shipped log has a gap)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.interval)
            self._wake.clear()
            if not self._stop.is_set():
                self.submit()

    def submit(self) -> int | None:
        """If leading and the state changed since the last snapshot, queue one; return its index."""
        if not self._is_leader():
            return None
        capture = self._machine.capture()
        body, term = capture.body(lazy=True), self._term()
        for mirror in self.mirrors:
            mirror.uploader.submit(body, index=capture.applied_index, term=term,
                                   keys=len(capture))
        if not self.uploader.submit(body, index=capture.applied_index, term=term,
                                    keys=len(capture)):
            return None
        return capture.applied_index

    def snapshot_now(self, timeout: float = 120.0) -> dict[str, Any]:
        """Upload a snapshot now (leader only) and wait for it; for admin requests."""
        if not self._is_leader():
            raise RuntimeError("only the leader takes snapshots")
        index = self.submit()
        if not self.uploader.flush(timeout):
            raise TimeoutError(f"snapshot not uploaded within {timeout}s")
        st = self.uploader.status()
        if st.last_index is None or (index is not None and st.last_index < index):
            raise RuntimeError(f"snapshot upload failed: {st.last_error}")
        return {"index": st.last_index, "size": st.last_size_bytes,
                "seconds": st.last_duration_s, "skipped_unchanged": index is None}

    def status(self) -> dict[str, Any]:
        """Snapshot and shipping health of the primary store, plus one entry per mirror."""
        applied = self._machine.applied_index
        return {**self._targets[0].status(applied),
                "mirrors": [m.status(applied) for m in self.mirrors]}
