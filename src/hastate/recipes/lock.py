"""Distributed lock with fencing tokens, kept in the replicated lock table.

:Status: new; the lock commands are part of the replicated log (``Command.LOCK_OPS``).

A grant is a lease: the owner holds the lock until ``expires_at`` unless it renews it. The
grant's **fencing token** is the Raft log index of the command that granted it, so every
new grant of a lock (and of any lock) carries a larger token than all grants before it.
Hand the token to whatever the lock protects, and have that resource refuse a token lower
than the highest it has seen: a holder that was paused past its expiry and taken over is
then refused, whatever it believes.

**Clock assumption.** Apply reads no clock: each command carries ``now``, the wall clock
(``time.time()``) of the process that proposes it, and a grant expires at ``now + ttl`` on
the holder's clock. Another owner may take the lock over only with a command whose ``now``
is at least ``expires_at + LOCK_MAX_SKEW`` (1 s). Mutual exclusion therefore assumes that
the wall clocks of all processes taking a lock agree within ``LOCK_MAX_SKEW`` (NTP keeps
them within milliseconds) and are not stepped while a lock is held. Raft needs no such
assumption; only the lock's expiry does. When the assumption fails, two owners may both
believe they hold the lock; the fencing token still lets the resource refuse the older one.

Example::

    lock = sm.lock("order-router", ttl=10.0, auto_renew=True, on_lost=stop_trading)
    with lock:                       # blocks until granted
        exchange.submit(order, fencing_token=lock.token)
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from hastate.errors import HAStateError, LockHeldError, LockLostError, WriteError
from hastate.recipes.proposer import Proposer
from hastate.state.codec import Command
from hastate.state.machine import LOCK_MAX_SKEW

logger = logging.getLogger(__name__)

__all__ = ["LOCK_MAX_SKEW", "Lock", "LockGrant"]


@dataclass(frozen=True)
class LockGrant:
    """A grant of a lock: its fencing token, its owner, and its expiry on the owner's clock."""

    token: int
    owner: str
    expires_at: float


class Lock:
    """A lock named ``name`` in the replicated state, taken through ``manager``.

    Two ``Lock`` objects contend even in one process: each has its own owner id, the
    manager's instance id plus a random suffix. Every step is one replicated command sent
    with the manager's exactly-once retries, and each is idempotent besides: acquiring a
    lock the owner already holds returns its grant (same token, later expiry), releasing a
    lock the owner no longer holds changes nothing.

    Example::

        lock = Lock(sm, "rebalancer", ttl=10.0)
        grant = lock.acquire(timeout=30)
        try:
            store.write(data, fencing_token=grant.token)
        finally:
            lock.release()

    :param manager: the :class:`~hastate.StateManager` (any
        :class:`~hastate.recipes.proposer.Proposer`) to propose through.
    :param name: the lock's name (any non-empty str).
    :param ttl: seconds a grant lasts unless renewed.
    :param auto_renew: renew from a background thread every ``ttl / 3`` while held; when a
        grant cannot be renewed before it expires, the lock is marked lost and ``on_lost``
        is called with the lost :class:`LockGrant` (on that thread).
    :param on_lost: called once per grant that is lost (auto-renew failed, or a renew found
        the lock taken over).
    :param poll_interval: how often a blocking acquire looks at this replica's lock table
        while another owner holds the lock; it proposes only when the lock looks free or
        expired there (and at least every ``max(1.0, 10 * poll_interval)`` seconds).
    :param clock: wall clock, sent as ``now`` in every command (seam for tests).
    :param sleep: used by blocking acquire between attempts (seam for tests).
    """

    def __init__(self, manager: Proposer, name: str, ttl: float = 10.0, *,
                 auto_renew: bool = False, on_lost: Callable[[LockGrant], Any] | None = None,
                 poll_interval: float = 0.05, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"lock name must be a non-empty str, got {name!r}")
        if not 0 < ttl < float("inf"):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.manager = manager
        self.name = name
        self.ttl = float(ttl)
        self.owner = f"{manager.instance_id}/{secrets.token_hex(6)}"
        self.max_skew = LOCK_MAX_SKEW
        self.auto_renew = auto_renew
        self.on_lost = on_lost
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep
        self._grant: LockGrant | None = None
        self._lost = False
        self._maybe_held = False          # an acquire's outcome is unknown: may hold it
        self._io = threading.Lock()       # one command of this Lock in flight at a time
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- state ----------------------------------------------------------------------------
    @property
    def grant(self) -> LockGrant | None:
        """The last grant this Lock received, until it is released or lost."""
        return None if self._lost else self._grant

    @property
    def token(self) -> int | None:
        """The fencing token while this Lock holds an unexpired grant (by its clock), else None."""
        grant = self.grant
        return grant.token if grant is not None and self._clock() < grant.expires_at else None

    @property
    def lost(self) -> bool:
        """True once a grant was lost (not renewed in time, or taken over)."""
        return self._lost

    def is_held(self) -> bool:
        """True while this Lock holds an unexpired grant, judged by its own clock."""
        return self.token is not None

    def holder(self) -> LockGrant | None:
        """The holder according to this replica's lock table (may lag the leader), or None.

        The entry stays after it expires until someone takes the lock over, releases it, or
        the leader's housekeeping purges it; compare ``expires_at`` with the clock to tell.
        """
        entry = self.manager.machine.locks().get(self.name)
        return LockGrant(entry[1], entry[0], entry[2]) if entry is not None else None

    # -- verbs ----------------------------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> LockGrant:
        """Take the lock; return the grant (its ``token`` is the fencing token).

        :param blocking: when False, make one attempt and raise if another owner holds it.
        :param timeout: with ``blocking``, give up after this many seconds (None: wait on).
        :raises LockHeldError: another owner holds the lock (non-blocking), or still held it
            when ``timeout`` ran out; names the owner and its expiry.
        :raises WriteError: the cluster did not answer (non-blocking, or still failing at
            the timeout). If ``outcome_unknown``, the grant may have applied: call
            ``acquire`` again (it returns that grant) or ``release``.
        """
        started = self._clock()
        deadline = None if timeout is None else started + max(0.0, timeout)
        force_every = max(1.0, 10 * self.poll_interval)
        last_proposal = float("-inf")
        backoff = self.poll_interval
        while True:
            now = self._clock()
            remaining = None if deadline is None else deadline - now
            held = self.holder()
            if blocking and now - last_proposal < force_every and held is not None \
                    and not self._claimable(held, now):
                # Another owner holds it on this replica's table: wait here, not in the log.
                if remaining is not None and remaining <= 0:
                    raise LockHeldError(held.owner, held.expires_at, name=self.name,
                                        token=held.token, waited=now - started)
                self._sleep(self.poll_interval if remaining is None
                            else min(self.poll_interval, remaining))
                continue
            last_proposal = now
            write_timeout = self.manager.write_timeout if remaining is None \
                else min(self.manager.write_timeout, max(remaining, 1.0))
            try:
                granted, grant = self._propose("lock_acquire", 0, write_timeout)
            except WriteError as exc:
                if exc.outcome_unknown:
                    self._maybe_held = True
                if not blocking or (deadline is not None and self._clock() >= deadline):
                    raise
                logger.warning("lock %r: acquire attempt failed, retrying: %s", self.name, exc)
                self._sleep(backoff)
                backoff = min(2 * backoff, 1.0)
                continue
            if granted:
                self._on_granted(grant)
                return grant
            now = self._clock()
            if not blocking or (deadline is not None and now >= deadline):
                raise LockHeldError(grant.owner, grant.expires_at, name=self.name,
                                    token=grant.token, waited=now - started if blocking else None)
            backoff = self.poll_interval
            self._sleep(self.poll_interval if deadline is None
                        else max(0.0, min(self.poll_interval, deadline - now)))

    def renew(self, timeout: float | None = None) -> LockGrant:
        """Extend the grant to ``now + ttl``, keeping its token.

        :raises LockLostError: this Lock holds no grant, or the grant is gone (released, or
            taken over after it expired); ``on_lost`` is called for a grant found gone.
        :raises WriteError: the renewal was not confirmed; the grant still ends at its
            current ``expires_at`` unless a later renew succeeds.
        """
        grant = self.grant
        if grant is None:
            raise LockLostError(f"lock {self.name!r} is not held by {self.owner!r}"
                                + (" (it was lost)" if self._lost else ""), name=self.name)
        granted, result = self._propose("lock_renew", grant.token,
                                        timeout if timeout is not None
                                        else self.manager.write_timeout)
        if granted:
            with self._io:
                if self._grant is not None and self._grant.token == result.token \
                        and not self._lost:
                    self._grant = result
            return result
        self._mark_lost(grant, f"renew refused: held by {result.owner!r} "
                               f"(token {result.token})" if result.owner else
                               "renew refused: the lock was released")
        raise LockLostError(f"lock {self.name!r} (token {grant.token}) is no longer held by "
                            f"{self.owner!r}" + (f"; held by {result.owner!r} with token "
                                                 f"{result.token}" if result.owner else ""),
                            name=self.name, token=grant.token)

    def release(self, timeout: float | None = None) -> bool:
        """Free the lock if this Lock holds it; stop auto-renewal.

        Idempotent: releasing a lock that was already released or taken over changes
        nothing. Returns True when this call freed a grant.

        :raises WriteError: the release was not confirmed; the grant then ends at its
            expiry at the latest.
        """
        self._stop.set()
        grant = self._grant
        if grant is None and not self._maybe_held:
            return False
        granted, _ = self._propose("lock_release", grant.token if grant is not None else 0,
                                   timeout if timeout is not None
                                   else self.manager.write_timeout)
        with self._io:
            if self._grant is grant:
                self._grant = None
            self._maybe_held = False
        return granted

    def __enter__(self) -> LockGrant:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, owner={self.owner!r}, token={self.token})"

    # -- internals ------------------------------------------------------------------------
    def _claimable(self, held: LockGrant, now: float) -> bool:
        """Would an acquire at ``now`` be granted against ``held`` (ours, or expired + skew)?"""
        return held.owner == self.owner or now >= held.expires_at + self.max_skew

    def _propose(self, op: str, token: int, timeout: float) -> tuple[bool, LockGrant]:
        command = Command.lock(op, self.name, self.owner, ttl=self.ttl, now=self._clock(),
                               token=token)
        with self._io:
            result = self.manager.propose(command, timeout)
        if result[0] != "lock":
            raise HAStateError(f"lock {self.name!r}: unexpected result {result!r}")
        _, granted, token, owner, expires_at = result
        return bool(granted), LockGrant(token, owner, expires_at)

    def _on_granted(self, grant: LockGrant) -> None:
        with self._io:
            self._grant = grant
            self._lost = False
            self._maybe_held = False
        if self.auto_renew and (self._renewer is None or not self._renewer.is_alive()
                                or self._stop.is_set()):
            self._stop = threading.Event()
            self._renewer = threading.Thread(target=self._renew_loop, args=(self._stop,),
                                             name=f"hastate-lock-{self.name}", daemon=True)
            self._renewer.start()

    def _mark_lost(self, grant: LockGrant, why: str) -> None:
        with self._io:
            if self._lost or self._grant is not grant:
                return
            self._lost = True
        logger.warning("lock %r lost (token %d): %s", self.name, grant.token, why)
        if self.on_lost is not None:
            try:
                self.on_lost(grant)
            except Exception:
                logger.exception("lock %r: on_lost callback failed", self.name)

    def _renew_loop(self, stop: threading.Event) -> None:
        interval = self.ttl / 3
        while not stop.wait(interval):
            while True:
                grant = self.grant
                if grant is None or stop.is_set():
                    return
                left = grant.expires_at - self._clock()
                if left <= 0:
                    self._mark_lost(grant, "not renewed before it expired")
                    return
                try:
                    self.renew(timeout=max(0.05, left))
                    break
                except LockLostError:
                    return
                except HAStateError as exc:
                    logger.warning("lock %r: renew failed, retrying: %s", self.name, exc)
                    if stop.wait(min(0.2, interval / 4)):
                        return
