"""FirestoreEngine: the engine contract on Google Cloud Firestore (see
docs/engine-firestore.md for the design, the guarantees and the costs).

Writes run as Firestore transactions (:mod:`.commands`), one at a time per instance (the
revision counter serializes the cluster's writes anyway; queuing them locally avoids
aborting our own transactions); lease keep-alives, which do not touch the counter, have a
queue of their own. Reads: ``local`` from this instance's mirror (fed by the
change log, :mod:`.watch`); ``linearizable`` first reads the revision counter with a
strongly consistent get (Firestore's document reads are strongly consistent), then waits
until the mirror reached it. Leadership is a lease document (:mod:`.leadership`), leases
are documents expired by the leader (:mod:`.leases`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Iterable, Literal, TypeVar

from hastate.consensus.membership import Member
from hastate.engines import Options
from hastate.engines.contract import Consistency
from hastate.engines.firestore import commands, retention
from hastate.engines.firestore.leadership import Leadership
from hastate.engines.firestore.leases import EXPIRY_INTERVAL, Housekeeper, LeaseView
from hastate.engines.firestore.members import MemberBoard
from hastate.engines.firestore.settings import FirestoreSettings
from hastate.engines.firestore.store import Store
from hastate.engines.firestore.watch import ChangeFeed
from hastate.errors import (FailoverError, NotSupportedError, ReadError, StoreRegressedError,
                            WriteError)
from hastate.state.codec import Command
from hastate.state.export import StateExport
from hastate.state.housekeeping import LeaseExpirer
from hastate.state.leases import LeaseInfo
from hastate.state.machine import ChangeListener
from hastate.state.txn import Record
from hastate.state.watch import Watcher, WatchHub

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: Seconds between two trims of the change log and the dedup documents (leader only).
TRIM_INTERVAL = 10.0


def result_revision(result: tuple) -> int | None:
    """The revision a write's result names (None: it names none)."""
    if result[0] == "ok":
        return int(result[1])
    if result[0] in ("txn", "lease_end"):
        return int(result[2])
    return None


class FirestoreEngine:
    """One instance's handle on a Firestore-backed cluster (see the module docstring)."""

    name = "firestore"

    def __init__(self, settings: FirestoreSettings, instance_id: str, members: list[Member],
                 options: Options) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self._members = sorted(members, key=lambda m: m.id)
        self.options = options
        self.store = Store(settings)
        self.hub = WatchHub(options.watch_history, options.watch_buffer)
        self.feed = ChangeFeed(self.store, self.hub,
                               history=min(options.watch_history,
                                           settings.change_log_retention))
        self._health_ok = True
        self.leadership = Leadership(self.store, instance_id, settings,
                                     eligible=lambda: self._health_ok)
        self.lease_view = LeaseView(self.store)
        self.expirer = LeaseExpirer(self.lease_view, leader_term=self.leadership.fencing_token,
                                    propose=self._propose)
        self.housekeeper = Housekeeper([(EXPIRY_INTERVAL, self.expirer.run_once),
                                        (TRIM_INTERVAL, self._trim)])
        region = next((m.region for m in self._members if m.id == instance_id), None)
        self.board = MemberBoard(self.store, instance_id, region,
                                 min_interval=settings.renew_interval,
                                 progress=lambda: self.feed.mirror.revision)
        self.client_id = uuid.uuid4().bytes
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="hastate-firestore-write")
        # Keep-alives touch only their lease document: they never wait behind writes that
        # contend for the revision counter.
        self._keeper = ThreadPoolExecutor(1, thread_name_prefix="hastate-firestore-keepalive")
        self._running = False
        self.trimmed = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.feed.start()
        self.lease_view.start()
        self.leadership.start()
        self.housekeeper.start()
        self._running = True
        logger.info("firestore engine started",
                    extra={"instance": self.instance_id, "project": self.settings.project,
                           "database": self.settings.database,
                           "prefix": self.settings.prefix,
                           "emulator": self.settings.emulator_host})

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self.housekeeper.stop()
        self.leadership.stop()
        self._writer.shutdown(wait=True, cancel_futures=True)
        self._keeper.shutdown(wait=True, cancel_futures=True)
        self.lease_view.stop()
        self.feed.stop()
        self.hub.close()
        self.store.client.close()

    @property
    def running(self) -> bool:
        return self._running and self.feed.fatal_error is None

    def ready(self) -> bool:
        return self.running and self.feed.listening and \
            self.leadership.holder(fresh=False) is not None

    def fatal_error(self) -> str | None:
        """Why the engine stopped serving (the store lost acknowledged writes), or None."""
        return self.feed.fatal_error

    def log_context(self) -> dict[str, Any]:
        return {"term": self.leadership.fencing_token(),
                "role": "leader" if self.is_leader() else "follower"}

    def healthy(self) -> bool:
        """The instance reached the store within a lease TTL and its change feed listens."""
        return self.running and self.feed.listening and \
            time.monotonic() - self.leadership.last_contact < self.settings.lease_ttl

    # -- writes -------------------------------------------------------------------------
    def next_seq(self) -> int:
        with self._seq_lock:
            return next(self._seq)

    def submit(self, command: Command, timeout: float,
               finish: Callable[[tuple], T]) -> "Future[T]":
        if command.op in Command.LOCK_OPS:
            raise NotSupportedError(self.name, command.op,
                                    "locks are built from transactions, leases and watch "
                                    "on this engine, not from the Raft lock table")
        command = replace(command, client=self.client_id, seq=self.next_seq())
        deadline = time.monotonic() + timeout
        if not self._running:
            raise WriteError("the firestore engine is stopped", outcome_unknown=False)
        queue = self._keeper if command.op == "lease_keepalive" else self._writer
        return queue.submit(self._write, command, deadline, finish)

    def _propose(self, command: Command) -> tuple:
        """The engine's own commands (lease expiry), waited for."""
        return self.submit(command, self.options.write_timeout, lambda r: r).result()

    def _write(self, command: Command, deadline: float, finish: Callable[[tuple], T]) -> T:
        started = time.monotonic()
        status = "error"
        try:
            if started >= deadline:
                status = "timeout"
                raise WriteError(f"{command.op} waited its whole timeout in this instance's "
                                 "write queue; not sent", outcome_unknown=False)
            outcome = self.execute(command, deadline)
            status = "conflict" if outcome.result[0] == "conflict" else "ok"
        except WriteError as exc:
            status = "timeout" if exc.outcome_unknown else status
            raise
        finally:
            seconds = time.monotonic() - started
            if seconds > self.settings.renew_interval:
                logger.warning("slow firestore write", extra={"op": command.op, "status": status,
                                                              "seconds": round(seconds, 3)})
            for observe in self.options.observers:
                observe(command.op, seconds, status)
        return finish(outcome.result)

    def execute(self, command: Command, deadline: float) -> commands.Outcome:
        """Run ``command`` (with its client id and seq) as one transaction until it commits
        or ``deadline``; then wait until this instance's mirror shows it."""
        if self.feed.fatal_error is not None:
            raise StoreRegressedError(self.feed.fatal_error)
        floor = self.feed.mirror.revision

        def body(tx: Any) -> commands.Outcome:
            outcome = commands.execute(self.store, tx, command)
            if 0 <= outcome.base < floor:
                self.feed.check_revision(outcome.base)     # raises: rolls back
            return outcome

        outcome = self.store.run(command.op, body, deadline=deadline)
        revision = result_revision(outcome.result)
        if revision is not None:
            self.feed.known(revision)
        if revision is not None and not self.feed.mirror.wait_for(
                revision, max(0.0, deadline - time.monotonic())):
            logger.warning("write committed but the change feed has not delivered it yet",
                           extra={"revision": revision, "mirror": self.feed.mirror.revision})
        return outcome

    # -- reads --------------------------------------------------------------------------
    def read(self, keys: Iterable[str] | None, consistency: Consistency,
             timeout: float | None) -> tuple[dict[str, Any], int]:
        if consistency == "linearizable":
            self._linearize(timeout if timeout is not None else self.options.write_timeout)
        elif consistency != "local":
            raise ValueError(f"consistency must be 'linearizable' or 'local', not {consistency!r}")
        return self.feed.mirror.snapshot_at(keys)

    def _linearize(self, timeout: float) -> None:
        """Wait until the mirror reflects every write committed before the call."""
        deadline = time.monotonic() + timeout
        try:
            snap = self.store.revision_ref.get(retry=None, timeout=timeout)
        except Exception as exc:
            raise ReadError(f"linearizable read failed: the revision counter could not be "
                            f"read from Firestore: {exc}") from None
        self.store.costs.read("read")
        revision = int(snap.get("revision")) if snap.exists else 0
        self.feed.check_revision(revision)
        if not self.feed.mirror.wait_for(revision, max(0.0, deadline - time.monotonic())):
            raise ReadError(f"linearizable read failed: this instance's change feed did not "
                            f"reach revision {revision} within {timeout:.1f}s (at "
                            f"{self.feed.mirror.revision})")

    def records(self, keys: Iterable[str]) -> dict[str, Record]:
        return self.feed.mirror.records(keys)

    def scan(self, prefix: str) -> tuple[list[tuple[str, Record]], int]:
        return self.feed.mirror.scan(prefix)

    def add_change_listener(self, listener: ChangeListener) -> None:
        self.feed.add_listener(listener)

    def export(self, timeout: float | None) -> StateExport:
        """Every key and lease at one revision: the mirror, once it reflects every write
        committed before the call (a linearizable read)."""
        self._linearize(timeout if timeout is not None else self.options.write_timeout)
        revision, records, attached = self.feed.mirror.export()
        ttls = {lease: info.ttl for lease, info in self.lease_view.leases().items()}
        return StateExport(revision, records,
                           {lease: (ttls[lease], frozenset(attached.get(lease, ())))
                            for lease in ttls})

    def revisions(self) -> dict[str, int]:
        return self.feed.mirror.revisions()

    def revision(self) -> int:
        return self.feed.mirror.revision

    def key_count(self) -> int:
        return len(self.feed.mirror)

    def state_hash(self) -> str:
        return self.feed.mirror.state_hash()

    # -- leases -------------------------------------------------------------------------
    def leases(self) -> dict[int, LeaseInfo]:
        return self.lease_view.leases()

    def has_lease(self, lease_id: int) -> bool:
        return lease_id in self.lease_view.leases()

    def lease_expiry(self) -> dict[int, float]:
        return self.expirer.time_left()

    def _trim(self) -> None:
        if self.leadership.is_leader():
            self.trimmed += retention.trim(self.store, self.feed.mirror.revision,
                                           self.settings.change_log_retention)

    # -- watch --------------------------------------------------------------------------
    def watch(self, prefix: str, start_revision: int | None, *, prev_value: bool,
              progress_interval: float | None, buffer: int | None) -> Watcher:
        return self.hub.watch(prefix, start_revision, prev_value=prev_value,
                              progress_interval=progress_interval, buffer=buffer)

    def watchers(self) -> int:
        return len(self.hub)

    # -- leadership ---------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.leadership.is_leader()

    def fencing_token(self) -> int | None:
        return self.leadership.fencing_token()

    def leader(self) -> str | None:
        return self.leadership.holder()

    def transfer(self, target: str, timeout: float | None) -> float:
        if target not in {m.id for m in self._members}:
            raise FailoverError(f"unknown instance {target!r}; the cluster file names "
                                f"{[m.id for m in self._members]}")
        return self.leadership.transfer(target, timeout if timeout is not None
                                        else max(10.0, 3 * self.settings.lease_ttl))

    def failover_candidates(self, fresh_after: float | None) -> list[tuple[int, str]]:
        try:
            return self.board.candidates(fresh_after)
        except Exception as exc:
            logger.warning("member health unreadable", extra={"error": str(exc)})
            return [] if fresh_after is not None else \
                [(0, m.id) for m in self._members if m.id != self.instance_id]

    def publish_health(self, ok: bool) -> None:
        self._health_ok = ok        # an unhealthy instance takes no leadership
        try:
            self.board.publish(ok)
        except Exception as exc:    # unreachable store: the others see a stale report
            logger.warning("health report not written", extra={"error": str(exc)})

    # -- membership and status ----------------------------------------------------------
    def members(self) -> list[Member]:
        return list(self._members)

    def change_membership(self, action: Literal["add", "remove"], member: Member | str,
                          timeout: float) -> int:
        raise NotSupportedError(self.name, "membership changes",
                                "the instances are the cluster file's [[nodes]]; edit it and "
                                "restart the bots (Firestore itself needs no membership)")

    def status(self) -> dict[str, Any]:
        leading = self.leadership.is_leader()
        return {
            "role": "leader" if leading else "follower",
            "is_leader": leading,
            "term": self.leadership.fencing_token() or 0,
            "leader": self.leadership.holder(fresh=False),
            "fencing_token": self.leadership.fencing_token(),
            "lease_remaining": round(self.leadership.lease_remaining(), 3),
            "leader_changes": self.leadership.changes,
            "change_feed": {"listening": self.feed.listening, "reloads": self.feed.reloads,
                            "oldest_watchable": self.hub.oldest_revision},
            "lease_expiries": self.expirer.expired_total,
            "trimmed_documents": self.trimmed,
            "fatal_error": self.feed.fatal_error,
            "firestore": {"project": self.settings.project, "database": self.settings.database,
                          "collection_prefix": self.settings.prefix,
                          "emulator": self.settings.emulator_host},
            "firestore_costs": self.store.costs.snapshot(),
            "members": [m.to_dict() for m in self._members],
        }
