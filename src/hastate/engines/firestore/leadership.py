"""Leadership as a lease document, ``<prefix>_meta/leader``, changed only in transactions.

Fields: ``holder`` (instance id, "" when released), ``token`` (the fencing token: +1 with
every change of holder), ``beat`` (+1 with every renewal), ``pending`` (the target of a
handover), ``requested`` (a handover asked for by a non-leader), ``renewed_at`` (server
time, for operators only).

Safety rests on monotonic clocks, never on comparing wall clocks:

* The holder may act until ``t0 + lease_ttl - clock_skew_margin``, ``t0`` being its
  monotonic time just *before* the transaction of its last successful renewal began
  (:meth:`Leadership.is_leader` is False from then on, whatever the network does).
* Another instance takes over only after it saw the document at the same
  ``(holder, token, beat, pending)`` for ``lease_ttl`` on its own monotonic clock, counted
  from when the read that first showed that version *returned* (after that renewal
  committed, so after the holder's ``t0``), in a transaction that commits only if the
  document is still at that version. So the holder's deadline passed before anyone else
  could act, as long as clock rates differ by less than the margin over a TTL.
* A released lease (``holder == ""``, written after the releaser stopped acting) may be
  taken at once; a handover (``pending == target``, written after the leader stopped
  acting) may be taken at once by its target only; others wait a TTL as above.
* An instance whose health check fails takes no lease (one it holds, the failover policy
  hands over).

Firestore's server timestamps are not used for decisions: a transaction cannot compare
"now" on the server, and the client's wall clock may be wrong by more than a TTL.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from google.cloud import firestore

from hastate.engines.firestore.settings import FirestoreSettings
from hastate.engines.firestore.store import RPC, Store
from hastate.errors import FailoverError, HAStateError

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class LeaseDoc:
    """The leader document as one read saw it."""

    holder: str = ""
    token: int = 0
    beat: int = 0
    pending: str = ""
    requested: str = ""

    @classmethod
    def of(cls, snap: Any) -> "LeaseDoc":
        if not snap.exists:
            return cls()
        f = snap.to_dict()
        return cls(f.get("holder", ""), int(f.get("token", 0)), int(f.get("beat", 0)),
                   f.get("pending", ""), f.get("requested", ""))

    @property
    def version(self) -> tuple[str, int, int, str]:
        """What a renewal or handover changes (a ``requested`` note does not extend)."""
        return (self.holder, self.token, self.beat, self.pending)

    def fields(self) -> dict[str, Any]:
        return {"holder": self.holder, "token": self.token, "beat": self.beat,
                "pending": self.pending, "requested": self.requested,
                "renewed_at": firestore.SERVER_TIMESTAMP}


class Leadership:
    """This instance's side of the leader lease (see the module docstring)."""

    def __init__(self, store: Store, instance_id: str, settings: FirestoreSettings, *,
                 clock: Callable[[], float] = time.monotonic,
                 eligible: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.eligible = eligible             # False: this instance's health check fails
        self.me = instance_id
        self.ttl = settings.lease_ttl
        self.margin = settings.clock_skew_margin
        self.interval = settings.renew_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._token: int | None = None         # the token of the lease this instance holds
        self._deadline = float("-inf")
        self._stepping_down = False
        self._doc = LeaseDoc()
        self._doc_at = float("-inf")
        self._first_seen: tuple[tuple[str, int, int, str], float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trace: int | None = None
        self.changes = 0
        self.last_contact = float("-inf")

    def trace_to(self, path: str) -> None:
        """Append every lease interval this instance takes to ``path`` (JSON lines on the
        machine's monotonic clock), for tests that check two leases never overlap."""
        self._trace = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hastate-firestore-leader",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and release the lease if held (others take it at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            token, self._deadline = self._token, float("-inf")
        if token is None:
            return

        def body(tx: Any) -> None:
            doc = LeaseDoc.of(self.store.leader_ref.get(transaction=tx, **RPC))
            self.store.costs.read("leadership")
            if doc.holder == self.me and doc.token == token:
                tx.set(self.store.leader_ref, LeaseDoc("", doc.token, doc.beat + 1).fields())
                self.store.costs.write("leadership")

        try:
            self.store.run("release", body, deadline=self._clock() + 5)
        except Exception as exc:   # unreachable: the lease lapses by itself
            logger.warning("could not release leadership", extra={"error": str(exc)})
        with self._lock:
            self._token = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:     # the store is unreachable: the deadline runs out
                logger.warning("leadership round failed", extra={"error": str(exc)})
            self._stop.wait(self.interval)

    # -- one round ------------------------------------------------------------------------
    def step(self) -> None:
        """Read the lease document; renew, take over, hand over or just observe."""
        t0 = self._clock()
        outcome: dict[str, Any] = {}

        def body(tx: Any) -> LeaseDoc:
            doc = LeaseDoc.of(self.store.leader_ref.get(transaction=tx, **RPC))
            self.store.costs.read("leadership")
            seen = self._clock()
            outcome.clear()
            new = self._decide(doc, seen, outcome)
            if new is not None:
                tx.set(self.store.leader_ref, new.fields())
                self.store.costs.write("leadership")
            return new or doc

        doc = self.store.run("leadership", body, deadline=t0 + self.ttl)
        now = self._clock()
        with self._lock:
            self.last_contact = now
            self._doc, self._doc_at = doc, now
            if doc.holder != self.me:
                self._stepping_down = False
            if outcome.get("act") == "take":
                self._stepping_down = False
            if outcome.get("act") in ("renew", "take") and not self._stepping_down:
                if outcome["act"] == "take":
                    self._token = doc.token
                    self.changes += 1
                    logger.info("leading", extra={"instance": self.me, "token": doc.token})
                self._deadline = t0 + self.ttl - self.margin
                start = outcome["seen"] if outcome["act"] == "take" else t0
                self._write_trace(doc.token, start, self._deadline)
            elif doc.holder != self.me or doc.token != self._token or doc.pending:
                if self._token is not None:
                    logger.info("not leading", extra={"instance": self.me,
                                                      "holder": doc.holder})
                self._token, self._deadline = None, float("-inf")

    def _decide(self, doc: LeaseDoc, seen: float, outcome: dict[str, Any]) -> LeaseDoc | None:
        """The document to write after reading ``doc`` at ``seen`` (None: write nothing)."""
        with self._lock:
            mine = self._token is not None and doc.holder == self.me and \
                doc.token == self._token and not doc.pending
            if mine and doc.requested and doc.requested != self.me:
                self._deadline, self._stepping_down = float("-inf"), True   # stop acting first
                outcome["act"] = "handover"
                return LeaseDoc(self.me, doc.token, doc.beat + 1, pending=doc.requested)
            if mine:
                if self._stepping_down:
                    return None
                outcome["act"] = "renew"
                return LeaseDoc(self.me, doc.token, doc.beat + 1)
            if self._first_seen is None or self._first_seen[0] != doc.version:
                self._first_seen = (doc.version, seen)
            expired = seen >= self._first_seen[1] + self.ttl
            if (not doc.holder or doc.pending == self.me or expired) and self.eligible():
                outcome["act"], outcome["seen"] = "take", seen
                return LeaseDoc(self.me, doc.token + 1, 0)
            return None

    def _write_trace(self, token: int, start: float, until: float) -> None:
        if self._trace is not None:
            line = {"node": self.me, "term": token, "from": start, "until": until}
            os.write(self._trace, (json.dumps(line) + "\n").encode())

    # -- queries --------------------------------------------------------------------------
    def is_leader(self) -> bool:
        with self._lock:
            return self._token is not None and not self._stepping_down and \
                self._clock() < self._deadline

    def fencing_token(self) -> int | None:
        with self._lock:
            ok = self._token is not None and not self._stepping_down and \
                self._clock() < self._deadline
            return self._token if ok else None

    def lease_remaining(self) -> float:
        with self._lock:
            return max(0.0, self._deadline - self._clock()) if self._token is not None else 0.0

    def holder(self, fresh: bool = True) -> str | None:
        """The holder of the lease document: read now (one document read), or with
        ``fresh=False`` as this instance's last round saw it."""
        with self._lock:
            doc = self._doc
        if fresh:
            try:
                doc = LeaseDoc.of(self.store.leader_ref.get(**RPC))
                self.store.costs.read("leader")
                with self._lock:
                    self._doc, self._doc_at = doc, self._clock()
            except Exception as exc:   # unreachable: the last known holder
                logger.debug("leader read failed", extra={"error": str(exc)})
        return doc.holder or None

    # -- handover -------------------------------------------------------------------------
    def transfer(self, target: str, timeout: float) -> float:
        """Hand the lease to ``target``; seconds until it holds it (FailoverError if not)."""
        start = self._clock()
        if target == self.me and self.is_leader():
            return 0.0
        with self._lock:
            leading = self._token is not None and self._clock() < self._deadline
            if leading:
                self._deadline, self._stepping_down = float("-inf"), True  # stop acting first
            token = self._token

        def body(tx: Any) -> None:
            doc = LeaseDoc.of(self.store.leader_ref.get(transaction=tx, **RPC))
            self.store.costs.read("leadership")
            if doc.holder == target and not doc.pending:
                return
            if leading and doc.holder == self.me and doc.token == token:
                new = LeaseDoc(self.me, doc.token, doc.beat + 1, pending=target)
            elif doc.holder and not doc.pending:
                new = LeaseDoc(doc.holder, doc.token, doc.beat, requested=target)
            else:
                raise FailoverError(f"no leader to hand over from (lease document: {doc}); "
                                    "retry once a leader is elected")
            tx.set(self.store.leader_ref, new.fields())
            self.store.costs.write("leadership")

        deadline = start + timeout
        try:
            self.store.run("handover", body, deadline=deadline)
        except HAStateError as exc:
            with self._lock:
                self._stepping_down = False     # nothing written: renew as before
            raise FailoverError(f"handover to {target} not written: {exc}") from None
        while self._clock() < deadline:
            if self.holder() == target:
                return self._clock() - start
            time.sleep(0.05)
        raise FailoverError(f"{target} did not take the leader lease within {timeout:.1f}s; "
                            "the lease lapses and the instances elect a leader")
