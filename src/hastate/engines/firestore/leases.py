"""hastate leases on Firestore: this instance's view of the lease documents, and the
leader's expiry of leases whose time ran out.

A lease document (``<prefix>_leases/<id>``) holds ``ttl``, ``refreshed`` (a counter bumped
by every keep-alive) and the attached ``keys``. Every instance follows the collection with
a snapshot listener. Firestore's own TTL policies delete documents within about a day, not
on time, so the *leader* expires leases as the Raft engine's LeaseExpirer does: it notes on
its monotonic clock when it saw each (lease, refreshed), restarts every countdown when it
becomes leader, and once ``ttl`` has passed proposes a ``lease_expire`` command naming the
(lease, refreshed) pairs; the transaction ends a lease only if it was not refreshed since.
A keep-alive is seen only after it committed, after its client sent it, so no lease ends
less than ``ttl`` after a keep-alive its owner saw succeed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from hastate.engines.firestore.store import Store
from hastate.errors import HAStateError
from hastate.state.codec import Command
from hastate.state.leases import LeaseInfo, expire_command

logger = logging.getLogger(__name__)

#: Seconds between two looks at the lease table on the leader (etcd: 500 ms).
EXPIRY_INTERVAL = 0.5


class LeaseView:
    """The lease documents as this instance's listener last saw them, with when."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[int, LeaseInfo] = {}
        self._seen: dict[int, tuple[int, float]] = {}   # lease -> (refreshed, local time)
        self._listener: Any = None
        self._synced = threading.Event()

    def start(self) -> None:
        self._listener = self.store.lease_docs.on_snapshot(self._on_snapshot)
        self._synced.wait(30)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.unsubscribe()

    def _on_snapshot(self, docs: Any, changes: Any, _read_time: Any) -> None:
        now = self._clock()
        if changes:
            self.store.costs.read("lease_watch", len(changes))
        table = {}
        for snap in docs:
            f = snap.to_dict()
            table[int(f["id"])] = LeaseInfo(int(f["id"]), float(f["ttl"]), int(f["refreshed"]),
                                            frozenset(f.get("keys", ())))
        with self._lock:
            self._leases = table
            for lease, info in table.items():
                if self._seen.get(lease, (None,))[0] != info.refreshed:
                    self._seen[lease] = (info.refreshed, now)
            for lease in set(self._seen) - set(table):
                del self._seen[lease]
        self._synced.set()

    def leases(self) -> dict[int, LeaseInfo]:
        with self._lock:
            return dict(self._leases)

    def seen(self) -> dict[int, tuple[int, float, float]]:
        """lease -> (refreshed, local time first seen so, ttl)."""
        with self._lock:
            return {lease: (refreshed, when, self._leases[lease].ttl)
                    for lease, (refreshed, when) in self._seen.items() if lease in self._leases}


class LeaseExpirer:
    """On the leader, ends leases ``ttl`` after their last refresh was seen (see module)."""

    def __init__(self, view: LeaseView, *, fencing_token: Callable[[], int | None],
                 propose: Callable[[Command], Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.view = view
        self.fencing_token = fencing_token
        self.propose = propose
        self._clock = clock
        self._token: int | None = None
        self._since = float("inf")
        self.expired_total = 0

    def deadlines(self) -> dict[int, tuple[int, float]]:
        """lease -> (refreshed, monotonic deadline) as this instance judges while leading."""
        return {lease: (refreshed, max(when, self._since) + ttl)
                for lease, (refreshed, when, ttl) in self.view.seen().items()}

    def observe_leadership(self) -> bool:
        token = self.fencing_token()
        if token is None:
            self._token, self._since = None, float("inf")
            return False
        if token != self._token:
            self._token, self._since = token, self._clock()
        return True

    def run_once(self) -> list[int]:
        if not self.observe_leadership():
            return []
        now = self._clock()
        due = [(lease, refreshed) for lease, (refreshed, deadline) in self.deadlines().items()
               if now >= deadline]
        if not due:
            return []
        result = self.propose(expire_command(due))
        ended = list(result[1]) if result and result[0] == "lease_end" else []
        self.expired_total += len(ended)
        if ended:
            logger.info("expired leases", extra={"leases": ended})
        return ended


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
