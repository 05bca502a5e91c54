"""Leader housekeeping through the log: expire leases whose countdown ran out on the
leader's clock.

The :class:`LeaseExpirer` is the lease's clock (docs/leases.md). Each node notes, on its
monotonic clock, when it applied a lease's grant or last keep-alive; the leader expires a
lease once ``ttl`` has passed since the later of that moment and the moment it noticed it
became leader. A leader change therefore restarts every countdown (as etcd does), and since
a node applies an entry only after it was committed, after the client sent it, no node
expires a lease less than ``ttl`` after its owner last sent a keep-alive that succeeded.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol

from hastate.errors import HAStateError
from hastate.state.codec import Command
from hastate.state.leases import LeaseInfo, expire_command
from hastate.state.machine import ReplicatedState

logger = logging.getLogger(__name__)

class LeaseSource(Protocol):
    """A lease table as one node sees it."""

    def leases(self) -> dict[int, LeaseInfo]:
        """lease id -> its ttl, last refresh and attached keys."""


#: Seconds between two looks at the lease table (etcd checks every 500 ms).
DEFAULT_LEASE_INTERVAL = 0.5


class _Periodic:
    """Runs :meth:`run_once` every ``interval`` seconds on a daemon thread named ``name``;
    a round that finds no quorum logs and waits for the next one."""

    name = "hastate-housekeeping"
    interval: float
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None

    def run_once(self) -> list:
        """One round on this node (subclasses: what to propose, if anything)."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the thread."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (an in-flight proposal finishes or times out)."""
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval):
            try:
                self.run_once()
            except HAStateError as exc:    # no quorum now: the next round tries again
                logger.warning("housekeeping round failed", extra={"job": self.name,
                                                                  "error": str(exc)})


class LeaseExpirer(_Periodic):
    """Proposes ``lease_expire`` on the leader for leases whose countdown ran out.

    ``table`` is this node's lease table: a :class:`ReplicatedState` (whose apply path tells
    when each grant or keep-alive took effect) or any other view of the leases (another
    engine's), whose refreshes count from when this expirer first sees them (later: never
    early). ``leader_term`` returns the term (or fencing token) this node leads in, None when
    it does not lead with a lease: a new one, or leading again, restarts every countdown.
    """

    name = "hastate-lease-expirer"

    def __init__(self, table: LeaseSource, *, leader_term: Callable[[], int | None],
                 propose: Callable[[Command], Any], interval: float = DEFAULT_LEASE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.leader_term = leader_term
        self.propose = propose
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[int, float]] = {}   # lease -> (refreshed, local time)
        self._term: int | None = None
        self._leader_since = float("inf")
        # Leases this node's own proposals ended (for tests; the metric counts applies).
        self.expired_total = 0
        if isinstance(table, ReplicatedState):
            table.add_listener(self._on_apply)

    def _on_apply(self, index: int, _previous: int, command: Command, result: Any) -> None:
        """Raft thread: note when a grant or keep-alive took effect on this replica.

        Lease commands always have an entry of their own (a batch never holds one), so a
        batch entry is skipped whole."""
        if command.op in ("lease_grant", "lease_keepalive") and result[0] == "lease" \
                and result[1]:
            with self._lock:
                self._seen[result[1]] = (index, self._clock())

    def deadlines(self) -> dict[int, tuple[int, float]]:
        """lease -> (refreshed, monotonic deadline on this node), as the leader would judge.

        A lease refreshed by an entry this node saw applied only through a dump counts from
        the first time it looks at it (later than the apply: never early).
        """
        now = self._clock()
        table = self.table.leases()
        out = {}
        with self._lock:
            for lease in set(self._seen) - set(table):
                del self._seen[lease]
            for lease, info in table.items():
                seen = self._seen.get(lease)
                if seen is None or seen[0] != info.refreshed:
                    seen = self._seen[lease] = (info.refreshed, now)
                out[lease] = (info.refreshed, max(seen[1], self._leader_since) + info.ttl)
        return out

    def time_left(self) -> dict[int, float]:
        """Seconds each lease has left on this leader's clock; {} while not leading."""
        if not self.observe_leadership():
            return {}
        now = self._clock()
        return {lease: max(0.0, deadline - now) for lease, (_, deadline)
                in self.deadlines().items()}

    def observe_leadership(self) -> bool:
        """Track leadership; True while leading. A new leadership restarts the countdowns."""
        term = self.leader_term()
        with self._lock:
            if term is None:
                self._term, self._leader_since = None, float("inf")
                return False
            if term != self._term:
                self._term, self._leader_since = term, self._clock()
                logger.info("leading: lease countdowns restart", extra={"term": term})
        return True

    def run_once(self) -> list[int]:
        """On the leader, expire the leases whose deadline passed; return the ids expired."""
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
