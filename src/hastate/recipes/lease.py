"""Leases as a bot holds them: grant, keep alive (by hand or in the background), revoke.

A :class:`Lease` is a handle on an entry of the replicated lease table
(:mod:`hastate.state.leases`). Keys put with it (``save_state(..., lease=lease)`` or
``txn.put(key, value, lease=lease)``) are deleted through the log when it is revoked or
when the leader's clock says its TTL ran out since the last keep-alive. The handle tracks
a conservative deadline: the monotonic time just before the last successful keep-alive (or
the grant) was sent, plus the TTL. The cluster never expires the lease before it.

Example::

    lease = sm.grant_lease(10)
    sm.save_state({"inflight/BTC": order_id}, lease=lease)
    lease.keep_alive_in_background(health=bot_is_healthy)   # stops with the process
    ...
    lease.revoke()                                           # keys gone at once
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from hastate.errors import HAStateError, LeaseNotFoundError
from hastate.recipes.proposer import Proposer
from hastate.state.leases import grant_command, keepalive_command, revoke_command

logger = logging.getLogger(__name__)


def _expect(result: tuple, kind: str) -> tuple:
    if not result or result[0] != kind:
        raise HAStateError(f"unexpected lease command result {result!r} (wanted {kind!r})")
    return result


def revoke(manager: Proposer, lease: int, timeout: float | None = None) -> bool:
    """End ``lease`` now and delete its keys; True when it still existed."""
    result = _expect(manager.propose(revoke_command(lease), timeout), "lease_end")
    return bool(result[1])


class Lease:
    """A granted lease: ``id`` (the log index of its grant) and ``ttl`` in seconds.

    Get one with :meth:`grant` (``sm.grant_lease(ttl)``). Used as a context manager, it is
    revoked on exit.
    """

    def __init__(self, manager: Proposer, lease_id: int, ttl: float, sent_at: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.id = lease_id
        self.ttl = ttl
        self._clock = clock
        self._deadline = sent_at + ttl
        self._ended = False
        self._io = threading.Lock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    @classmethod
    def grant(cls, manager: Proposer, ttl: float, timeout: float | None = None, *,
              clock: Callable[[], float] = time.monotonic) -> "Lease":
        """Grant a lease of ``ttl`` seconds through ``manager``.

        :raises ValueError: ``ttl`` is not a positive number of seconds.
        :raises WriteError: not confirmed in time (``outcome_unknown``: a lease may have
            been granted; unused, it expires after its TTL).
        """
        command = grant_command(ttl)
        sent = clock()
        _, lease_id, granted_ttl = _expect(manager.propose(command, timeout), "lease")
        return cls(manager, lease_id, granted_ttl, sent, clock=clock)

    # -- verbs ----------------------------------------------------------------------------
    def keep_alive(self, timeout: float | None = None) -> float:
        """Restart the lease's countdown; return :meth:`time_to_live` after it.

        :raises LeaseNotFoundError: the lease has ended (its keys are gone).
        :raises WriteError: not confirmed; the lease still ends at its current deadline
            unless a later keep-alive succeeds.
        """
        sent = self._clock()
        _, lease_id, _ = _expect(self.manager.propose(keepalive_command(self.id), timeout),
                                 "lease")
        if not lease_id:
            self._ended = True
            raise LeaseNotFoundError(self.id)
        with self._io:
            self._deadline = max(self._deadline, sent + self.ttl)
        return self.time_to_live()

    def revoke(self, timeout: float | None = None) -> bool:
        """Stop any background keeper, end the lease and delete its keys now.

        Returns True when the lease still existed. Idempotent.
        """
        self.stop_keep_alive()
        existed = revoke(self.manager, self.id, timeout)
        self._ended = True
        return existed

    def time_to_live(self) -> float:
        """Seconds the lease is sure to live without another keep-alive (0 once ended).

        Conservative: counted from just before the last successful keep-alive was sent;
        the cluster expires it no earlier than that.
        """
        if self._ended or not self.manager.has_lease(self.id):
            self._ended = True
            return 0.0
        return max(0.0, self._deadline - self._clock())

    @property
    def alive(self) -> bool:
        """True while :meth:`time_to_live` is positive."""
        return self.time_to_live() > 0

    # -- background keeper ----------------------------------------------------------------
    def keep_alive_in_background(self, interval: float | None = None, *,
                                 health: Callable[[], bool] | None = None,
                                 on_lost: Callable[["Lease"], Any] | None = None) -> "Lease":
        """Keep the lease alive every ``interval`` seconds (default ``ttl / 3``) on a daemon
        thread, which ends with the process, on :meth:`stop_keep_alive` or :meth:`revoke`,
        and as soon as ``health()`` returns False (then the lease expires after its TTL,
        taking the keys of an unhealthy bot with it). ``on_lost(lease)`` is called once if
        the lease ends while kept (expired, revoked elsewhere, or not renewed in time).
        """
        interval = self.ttl / 3 if interval is None else interval
        if not 0 < interval < self.ttl:
            raise ValueError(f"keep-alive interval must be in (0, ttl={self.ttl}), "
                             f"got {interval!r}")
        self.stop_keep_alive()
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep_loop,
                                        args=(self._stop, interval, health, on_lost),
                                        name=f"hastate-lease-{self.id}", daemon=True)
        self._keeper.start()
        return self

    def stop_keep_alive(self) -> None:
        """Stop the background keeper (the lease then lives out its TTL)."""
        self._stop.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(5)

    def _keep_loop(self, stop: threading.Event, interval: float,
                   health: Callable[[], bool] | None,
                   on_lost: Callable[["Lease"], Any] | None) -> None:
        wait = interval
        while not stop.wait(wait):
            if health is not None and not health():
                logger.warning("lease keeper stops: health check failed",
                               extra={"lease": self.id})
                return
            left = self.time_to_live()
            try:
                if left > 0:
                    self.keep_alive(timeout=max(0.05, left))
                    wait = interval
                    continue
            except LeaseNotFoundError:
                pass
            except Exception as exc:   # no quorum, or the node stopped: retry until the TTL
                logger.warning("lease keep-alive failed, retrying: %r", exc,
                               extra={"lease": self.id})
                wait = min(0.2, interval / 4)
                continue
            logger.warning("lease lost", extra={"lease": self.id})
            if on_lost is not None:
                try:
                    on_lost(self)
                except Exception:
                    logger.exception("lease on_lost callback failed", extra={"lease": self.id})
            return

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.revoke()

    def __repr__(self) -> str:
        return f"Lease(id={self.id}, ttl={self.ttl})"
