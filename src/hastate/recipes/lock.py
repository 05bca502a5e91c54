"""Distributed lock with fencing tokens, built on a lease, a transaction and a watch.

:Status: stable; uses only public primitives (``grant_lease``, ``transaction``, ``watch``,
a local ``get_state``), which every engine provides.

A lock is the key ``<prefix><name>`` (prefix ``locks/``, reserved for this recipe). Taking
it is one transaction: create the key only if it is absent (``create_revision == 0``),
attached to a lease the holder keeps alive. The grant's **fencing token** is the key's
create revision, so every grant of a lock carries a larger token than all grants before it.
Hand the token to whatever the lock protects, and have that resource refuse a token lower
than the highest it has seen: a holder that was paused past its lease and taken over is
then refused, whatever it believes.

Releasing deletes the key with a compare on the token (a stale holder deletes nothing),
then revokes the lease. A holder that dies or stops keeping its lease alive loses the key
through lease expiry, decided by the leader's monotonic clock (docs/leases.md): no purge
job, no wall-clock assumption. A waiter watches the key and tries again when it is deleted.

**Safety rule.** The holder counts its lease's life from just before it sent the last
keep-alive that succeeded, on its own monotonic clock; the cluster never expires the lease
earlier. ``token`` and ``is_held()`` turn None/False as soon as that count runs out, so
a holder stops acting before anyone else can be granted the lock. Deleting the key by hand
is a forced release: the holder learns it at its next renew, and until then only the
fencing token protects the resource.

Example::

    lock = sm.lock("order-router", ttl=10.0, auto_renew=True, on_lost=stop_trading)
    with lock:                       # blocks until granted
        exchange.submit(order, fencing_token=lock.token)
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from hastate.errors import (CompactedError, HAStateError, LeaseNotFoundError, LockHeldError,
                            LockLostError, WatchError, WriteError)
from hastate.state import txn
from hastate.state.watch import Watcher

logger = logging.getLogger(__name__)

__all__ = ["PREFIX", "Lock", "LockGrant", "LockHost", "LockLease"]

#: Key prefix of locks, reserved for this recipe.
PREFIX = "locks/"


class LockLease(Protocol):
    """What a lock needs of a lease (:class:`~hastate.recipes.lease.Lease` is one)."""

    id: int

    def keep_alive(self, timeout: float | None = None) -> float:
        """Restart the countdown; the seconds it is then sure to live (LeaseNotFoundError
        once ended)."""

    def revoke(self, timeout: float | None = None) -> bool:
        """End the lease now, deleting its keys."""

    def time_to_live(self) -> float:
        """Seconds it is sure to live without another keep-alive, counted on this process's
        monotonic clock from before the last keep-alive that succeeded (0 once ended)."""


class LockHost(Protocol):
    """What a lock needs of a :class:`~hastate.StateManager` (or another engine's manager)."""

    instance_id: str
    write_timeout: float

    def grant_lease(self, ttl: float, *, timeout: float | None = None) -> LockLease: ...

    def transaction(self, compare: Iterable[txn.Compare] = (), success: Iterable[txn.Op] = (),
                    failure: Iterable[txn.Op] = (), *,
                    timeout: float | None = None) -> txn.TxnResult: ...

    def watch(self, prefix: str = "", start_revision: int | None = None) -> Watcher: ...

    def get_state(self, consistency: str = "linearizable", *,
                  keys: Iterable[str] | None = None) -> Any: ...


@dataclass(frozen=True)
class LockGrant:
    """A grant of a lock: its fencing token, its owner, the lease it hangs on, and (for this
    process's own grants) the monotonic time until which it is sure to hold, else None."""

    token: int
    owner: str
    lease: int
    expires_at: float | None = None


class Lock:
    """A lock named ``name`` in the replicated state, taken through ``manager``.

    Two ``Lock`` objects contend even in one process: each has its own owner id, the
    manager's instance id plus a random suffix. Every step is a replicated write sent with
    the manager's exactly-once retries, and each is idempotent besides: acquiring a lock the
    owner already holds returns its grant (same token, lease kept alive), releasing a lock
    the owner no longer holds changes nothing.

    Example::

        lock = Lock(sm, "rebalancer", ttl=10.0)
        grant = lock.acquire(timeout=30)
        try:
            store.write(data, fencing_token=grant.token)
        finally:
            lock.release()

    :param manager: the :class:`~hastate.StateManager` (any :class:`LockHost`).
    :param name: the lock's name (any non-empty str).
    :param ttl: seconds the holder's lease lasts unless kept alive.
    :param auto_renew: keep the lease alive from a background thread every ``ttl / 3``
        while held; when it cannot be kept alive before it runs out, the lock is marked lost
        and ``on_lost`` is called with the lost :class:`LockGrant` (on that thread).
    :param on_lost: called once per grant that is lost (lease ran out or ended, or the key
        was found gone).
    :param clock: monotonic clock for timeouts and ``expires_at``; the same one the
        manager's leases count with (seam for tests).
    :param sleep: used between attempts that failed to reach the cluster (seam for tests).
    :param prefix: key prefix of locks.
    """

    def __init__(self, manager: LockHost, name: str, ttl: float = 10.0, *,
                 auto_renew: bool = False, on_lost: Callable[[LockGrant], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, prefix: str = PREFIX) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"lock name must be a non-empty str, got {name!r}")
        if not 0 < ttl < float("inf"):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.manager = manager
        self.name = name
        self.key = f"{prefix}{name}"
        self.ttl = float(ttl)
        self.owner = f"{manager.instance_id}/{secrets.token_hex(6)}"
        self.auto_renew = auto_renew
        self.on_lost = on_lost
        self._clock = clock
        self._sleep = sleep
        self._lease: LockLease | None = None  # the lease of the grant, or of the last attempt
        self._grant: LockGrant | None = None
        self._lost = False
        self._maybe_held = False          # an attempt's outcome is unknown: may hold it
        self._io = threading.RLock()      # one step of this Lock at a time
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- state ----------------------------------------------------------------------------
    @property
    def grant(self) -> LockGrant | None:
        """The last grant this Lock received, until it is released or lost."""
        return None if self._lost else self._grant

    @property
    def token(self) -> int | None:
        """The fencing token while this Lock's lease is sure to be alive (by its own
        monotonic clock), else None: act on the guarded resource only while this is set."""
        grant, lease = self.grant, self._lease
        if grant is None or lease is None or lease.id != grant.lease:
            return None
        return grant.token if lease.time_to_live() > 0 else None

    @property
    def lost(self) -> bool:
        """True once a grant was lost (its lease ran out or ended, or its key was deleted)."""
        return self._lost

    def is_held(self) -> bool:
        """True while this Lock holds a grant whose lease is sure to be alive."""
        return self.token is not None

    def holder(self, timeout: float | None = None) -> LockGrant | None:
        """The current holder (a linearizable read through the log), or None when free."""
        found = self.manager.transaction((), [txn.get(self.key)],
                                         timeout=self._timeout(timeout)).responses[0]
        return self._described(found) if found is not None else None

    # -- verbs ----------------------------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> LockGrant:
        """Take the lock; return the grant (its ``token`` is the fencing token).

        While another owner holds it, a blocking acquire watches the key and tries again
        once it is deleted (released, or its holder's lease expired).

        :param blocking: when False, make one attempt and raise if another owner holds it.
        :param timeout: with ``blocking``, give up after this many seconds (None: wait on).
        :raises LockHeldError: another owner holds the lock (non-blocking), or still held it
            when ``timeout`` ran out; names the owner, its lease and its token.
        :raises WriteError: the cluster did not answer (non-blocking, or still failing at
            the timeout). If ``outcome_unknown``, the grant may have applied: call
            ``acquire`` again (it returns that grant) or ``release``.
        """
        started = self._clock()
        deadline = None if timeout is None else started + max(0.0, timeout)
        backoff = 0.05
        while True:
            remaining = None if deadline is None else deadline - self._clock()
            write_timeout = self.manager.write_timeout if remaining is None \
                else min(self.manager.write_timeout, max(remaining, 1.0))
            try:
                grant, held, revision = self._attempt(write_timeout)
            except WriteError as exc:
                if exc.outcome_unknown and self._lease is not None:
                    self._maybe_held = True
                if not blocking or (deadline is not None and self._clock() >= deadline):
                    raise
                logger.warning("lock attempt failed, retrying", extra={
                    "lock": self.name, "error": str(exc)})
                self._sleep(backoff)
                backoff = min(2 * backoff, 1.0)
                continue
            backoff = 0.05
            if grant is not None:
                self._on_granted(grant)
                return grant
            if held is None:                  # nothing to wait for: try again
                continue
            now = self._clock()
            if not blocking or (deadline is not None and now >= deadline):
                self._give_up()
                raise LockHeldError(held.owner, name=self.name, token=held.token,
                                    lease=held.lease,
                                    waited=now - started if blocking else None)
            self._wait_deleted(revision, None if deadline is None else deadline - now)

    def renew(self, timeout: float | None = None) -> LockGrant:
        """Keep the grant's lease alive (same token); return the grant with its new expiry.

        :raises LockLostError: this Lock holds no grant, or the grant is gone (its lease
            ended, or its key was deleted); ``on_lost`` is called for a grant found gone.
        :raises WriteError: the keep-alive was not confirmed; the grant still ends at its
            current ``expires_at`` unless a later renew succeeds.
        """
        grant, lease = self.grant, self._lease
        if grant is None or lease is None or lease.id != grant.lease:
            raise LockLostError(f"lock {self.name!r} is not held by {self.owner!r}"
                                + (" (it was lost)" if self._lost else ""), name=self.name)
        try:
            left = lease.keep_alive(self._timeout(timeout))
        except LeaseNotFoundError:
            self._mark_lost(grant, "its lease has ended")
            raise LockLostError(f"lock {self.name!r} (token {grant.token}): its lease "
                                f"{grant.lease} has ended", name=self.name,
                                token=grant.token) from None
        # This replica applied the keep-alive: any delete committed before it is visible.
        if self.manager.get_state("local", keys=[self.key]).get(self.key) != self._value(lease):
            self._mark_lost(grant, "its key was deleted")
            raise LockLostError(f"lock {self.name!r} (token {grant.token}) is no longer held "
                                f"by {self.owner!r}: its key was deleted", name=self.name,
                                token=grant.token)
        renewed = dataclasses.replace(grant, expires_at=self._clock() + left)
        with self._io:
            if self._grant is grant and not self._lost:
                self._grant = renewed
        return renewed

    def release(self, timeout: float | None = None) -> bool:
        """Free the lock if this Lock holds it; stop auto-renewal; revoke the lease.

        The key is deleted only if its create revision is still this grant's token, so a
        stale holder frees nothing. Idempotent. Returns True when this call deleted the key.

        :raises WriteError: the release was not confirmed; the grant then ends when its
            lease runs out at the latest.
        """
        self._stop.set()
        with self._io:
            grant, lease, maybe = self._grant, self._lease, self._maybe_held
        if grant is None and lease is None:
            return False
        seconds = self._timeout(timeout)
        freed = False
        if grant is not None:
            freed = self.manager.transaction([txn.create_revision(self.key) == grant.token],
                                             [txn.delete(self.key)], timeout=seconds).succeeded
        elif maybe and lease is not None:     # an attempt of unknown outcome: token unknown
            freed = self.manager.transaction([txn.value(self.key) == self._value(lease)],
                                             [txn.delete(self.key)], timeout=seconds).succeeded
        with self._io:
            if self._grant is grant:
                self._grant = None
            self._maybe_held = False
        self._give_up(seconds)
        return freed

    def __enter__(self) -> LockGrant:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, owner={self.owner!r}, token={self.token})"

    # -- internals ------------------------------------------------------------------------
    def _timeout(self, timeout: float | None) -> float:
        return self.manager.write_timeout if timeout is None else timeout

    def _value(self, lease: LockLease) -> dict[str, Any]:
        """What the key holds while this Lock holds it on ``lease``."""
        return {"owner": self.owner, "lease": lease.id}

    def _described(self, found: txn.KeyValue) -> LockGrant:
        value = found.value if isinstance(found.value, dict) else {}
        return LockGrant(found.create_revision, str(value.get("owner", "")),
                         int(value.get("lease", 0) or 0))

    def _fresh_lease(self, timeout: float) -> LockLease:
        """The lease for an attempt: the last one kept alive now, or a new one."""
        lease = self._lease
        if lease is not None:
            try:
                lease.keep_alive(timeout)
                return lease
            except LeaseNotFoundError:
                self._lease = None
        lease = self.manager.grant_lease(self.ttl, timeout=timeout)
        with self._io:
            self._lease = lease
        return lease

    def _attempt(self, timeout: float) -> tuple[LockGrant | None, LockGrant | None, int]:
        """One create-if-absent: (our grant, None, rev) or (None, the holder, revision).

        (None, None, revision): try again at once (the key held a stale grant of ours, now
        deleted, or the lease ended before the put).
        """
        with self._io:
            lease = self._fresh_lease(timeout)
            mine = self._value(lease)
            try:
                result = self.manager.transaction([txn.create_revision(self.key) == 0],
                                                  [txn.put(self.key, mine, lease=lease)],
                                                  [txn.get(self.key)], timeout=timeout)
            except LeaseNotFoundError:        # it ran out since its keep-alive: a new one
                self._lease = None
                return None, None, 0
            if result.succeeded:
                return self._own(result.revision, lease), None, result.revision
            held = self._described(result.responses[0])
            if held.owner == self.owner and held.lease == lease.id:
                return self._own(held.token, lease), None, result.revision  # already ours
            if held.owner == self.owner:      # ours on a lease we dropped: free it first
                self.manager.transaction([txn.create_revision(self.key) == held.token],
                                         [txn.delete(self.key)], timeout=timeout)
                return None, None, result.revision
        if self._grant is not None:           # another owner holds it: ours is gone
            self._mark_lost(self._grant, f"the lock is held by {held.owner!r}")
        return None, held, result.revision

    def _own(self, token: int, lease: LockLease) -> LockGrant:
        return LockGrant(token, self.owner, lease.id, self._clock() + lease.time_to_live())

    def _wait_deleted(self, revision: int, remaining: float | None) -> None:
        """Block until the key is deleted after ``revision`` (or ``remaining`` runs out)."""
        deadline = None if remaining is None else self._clock() + remaining
        try:
            with self.manager.watch(self.key, start_revision=revision + 1) as events:
                while True:
                    left = None if deadline is None else deadline - self._clock()
                    if left is not None and left <= 0:
                        return
                    event = events.get(timeout=left)
                    if event is not None and event.key == self.key and event.type == "delete":
                        return
        except CompactedError:
            return                                # the key changed long ago: look again
        except WatchError as exc:
            logger.warning("lock watch ended, trying again", extra={"lock": self.name,
                                                                    "error": str(exc)})
            self._sleep(0.05)

    def _give_up(self, timeout: float | None = None) -> None:
        """Revoke the lease of a failed attempt or a released grant (best effort: an
        unrevoked lease holds no key and expires after its TTL)."""
        with self._io:
            lease, self._lease = self._lease, None
            self._maybe_held = False
        if lease is None:
            return
        try:
            lease.revoke(self._timeout(timeout))
        except HAStateError as exc:
            logger.warning("lock lease not revoked; it expires after its TTL", extra={
                "lock": self.name, "lease": lease.id, "error": str(exc)})

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
        logger.warning("lock lost", extra={"lock": self.name, "token": grant.token,
                                           "reason": why})
        if self.on_lost is not None:
            try:
                self.on_lost(grant)
            except Exception:
                logger.exception("lock on_lost callback failed", extra={"lock": self.name})

    def _renew_loop(self, stop: threading.Event) -> None:
        interval = self.ttl / 3
        while not stop.wait(interval):
            while True:
                grant, lease = self.grant, self._lease
                if grant is None or lease is None or stop.is_set():
                    return
                left = lease.time_to_live()
                if left <= 0:
                    self._mark_lost(grant, "its lease was not kept alive in time")
                    return
                try:
                    self.renew(timeout=max(0.05, left))
                    break
                except LockLostError:
                    return
                except HAStateError as exc:
                    logger.warning("lock renew failed, retrying", extra={
                        "lock": self.name, "error": str(exc)})
                    if stop.wait(min(0.2, interval / 4)):
                        return
