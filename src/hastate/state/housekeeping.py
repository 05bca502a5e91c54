"""Leader housekeeping through the log: purge lock entries nobody holds any more.

Apply reads no clock, so an expired lock entry stays in the table until someone takes the
lock over or releases it. The leader's :class:`LockJanitor` looks at its replica's table
every ``interval`` seconds and, when an entry could be taken over now (``now >=
expires_at + LOCK_MAX_SKEW``), proposes one ``lock_purge`` command carrying its clock
reading; every replica then drops the same entries. Nothing is proposed while nothing is
expired, so an idle cluster's log does not grow.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from hastate.errors import HAStateError
from hastate.state.codec import Command
from hastate.state.machine import LOCK_MAX_SKEW, ReplicatedState

logger = logging.getLogger(__name__)

#: Seconds between two looks at the lock table.
DEFAULT_INTERVAL = 30.0


class LockJanitor:
    """Proposes ``lock_purge`` on the leader when its lock table holds expired entries."""

    def __init__(self, machine: ReplicatedState, *, is_leader: Callable[[], bool],
                 propose: Callable[[Command], Any], interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self.machine = machine
        self.is_leader = is_leader
        self.propose = propose
        self.interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.purged = 0          # entries this node's purges removed

    def expired(self, now: float) -> list[str]:
        """Lock names another owner could take over at ``now`` (this replica's table)."""
        return sorted(name for name, (_, _, expires_at) in self.machine.locks().items()
                      if now >= expires_at + LOCK_MAX_SKEW)

    def run_once(self) -> list[str]:
        """On the leader, purge what is expired now; return the names purged."""
        if not self.is_leader():
            return []
        now = self._clock()
        if not self.expired(now):
            return []
        result = self.propose(Command.purge_locks(now))
        names = list(result[1]) if result and result[0] == "purged" else []
        self.purged += len(names)
        if names:
            logger.info("purged expired locks", extra={"locks": names})
        return names

    def start(self) -> None:
        """Run :meth:`run_once` every ``interval`` seconds on a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hastate-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (an in-flight purge finishes or times out)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except HAStateError as exc:    # no quorum now: the next round tries again
                logger.warning("lock purge failed: %s", exc)
