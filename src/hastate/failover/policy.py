"""Health-driven failover: an unhealthy leader hands over, an unhealthy follower stays out.

Every ``health_check_interval`` each node runs its health check and tells its peers the
result; a leader that has failed it for ``failover_timeout`` transfers leadership to the
healthy peer that is furthest ahead. The Raft layer keeps an unhealthy follower from
standing for election or accepting a transfer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], bool]


@dataclass(frozen=True)
class FailoverSettings:
    """What configure_failover() was given."""

    health_check_interval: float
    failover_timeout: float


class FailoverPolicy:
    """Runs the health check on its own thread and triggers transfers when the leader is sick."""

    def __init__(self, settings: FailoverSettings, check: HealthCheck, *,
                 is_leader: Callable[[], bool], publish: Callable[[bool], None],
                 pick_target: Callable[[], str | None], transfer: Callable[[str], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._check = check
        self._is_leader = is_leader
        self._publish = publish
        self._pick_target = pick_target
        self._transfer = transfer
        self._clock = clock
        self.healthy = True
        self.failures_total = 0
        self.failovers_total = 0
        self._unhealthy_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the health-check thread."""
        self._thread = threading.Thread(target=self._run, name="hastate-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the health-check thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            self.step()
            if self._stop.wait(self.settings.health_check_interval):
                return

    def step(self) -> None:
        """One health check; hand leadership over when it has failed for long enough."""
        try:
            ok = bool(self._check())
        except Exception:
            logger.exception("health check raised; counting it as a failure")
            ok = False
        now = self._clock()
        if ok:
            self._unhealthy_since = None
        else:
            self.failures_total += 1
            if self._unhealthy_since is None:
                self._unhealthy_since = now
        self.healthy = ok
        self._publish(ok)
        if ok or not self._is_leader():
            return
        if now - self._unhealthy_since < self.settings.failover_timeout:
            return
        target = self._pick_target()
        if target is None:
            logger.warning("leader is unhealthy but no healthy, caught-up peer can take over")
            return
        logger.warning("leader unhealthy for %.1fs: handing leadership to %s",
                       now - self._unhealthy_since, target)
        try:
            self._transfer(target)
            self.failovers_total += 1
        except Exception:
            logger.exception("health-driven failover to %s failed", target)
