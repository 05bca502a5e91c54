"""hastate leases on Firestore: this instance's view of the lease documents, and the
leader's expiry of leases whose time ran out.

A lease document (``<prefix>_leases/<id>``) holds ``ttl``, ``refreshed`` (a counter bumped
by every keep-alive) and the attached ``keys``. Every instance follows the collection with
a snapshot listener. Firestore's own TTL policies delete documents within about a day, not
on time, so the *leader* expires leases with the Raft engine's
:class:`~hastate.state.housekeeping.LeaseExpirer` over this view: it counts each (lease,
refreshed) from when it first saw it, restarts every countdown when it becomes leader, and
once ``ttl`` has passed proposes a ``lease_expire`` command naming the (lease, refreshed)
pairs; the transaction ends a lease only if it was not refreshed since. A keep-alive is
seen only after it committed, after its client sent it, so no lease ends less than ``ttl``
after a keep-alive its owner saw succeed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from hastate.engines.firestore.store import Store
from hastate.errors import HAStateError
from hastate.state.leases import LeaseInfo

logger = logging.getLogger(__name__)

#: Seconds between two looks at the lease table on the leader (etcd: 500 ms).
EXPIRY_INTERVAL = 0.5


class LeaseView:
    """The lease documents as this instance's listener last saw them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._leases: dict[int, LeaseInfo] = {}
        self._listener: Any = None
        self._synced = threading.Event()

    def start(self) -> None:
        self._listener = self.store.lease_docs.on_snapshot(self._on_snapshot)
        self._synced.wait(30)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.unsubscribe()

    def _on_snapshot(self, docs: Any, changes: Any, _read_time: Any) -> None:
        if changes:
            self.store.costs.read("lease_watch", len(changes))
        table = {}
        for snap in docs:
            f = snap.to_dict()
            table[int(f["id"])] = LeaseInfo(int(f["id"]), float(f["ttl"]), int(f["refreshed"]),
                                            frozenset(f.get("keys", ())))
        with self._lock:
            self._leases = table
        self._synced.set()

    def leases(self) -> dict[int, LeaseInfo]:
        with self._lock:
            return dict(self._leases)


class Housekeeper:
    """The leader's periodic jobs on one thread: lease expiry, then log trimming."""

    def __init__(self, jobs: list[tuple[float, Callable[[], Any]]]) -> None:
        self.jobs = jobs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hastate-firestore-housekeeping",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        due = [0.0] * len(self.jobs)
        while not self._stop.wait(EXPIRY_INTERVAL / 5):
            now = time.monotonic()
            for i, (interval, job) in enumerate(self.jobs):
                if now < due[i]:
                    continue
                due[i] = now + interval
                try:
                    job()
                except HAStateError as exc:
                    logger.warning("housekeeping round failed", extra={"error": str(exc)})
                except Exception:   # a transient store error: next round
                    logger.exception("housekeeping round failed")
