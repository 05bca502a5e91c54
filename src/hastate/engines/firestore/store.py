"""The cluster's documents in Firestore: names, record encoding, a transaction runner and
the cost meter.

Collections (``<prefix>`` = ``[firestore] collection_prefix``):

* ``<prefix>_state/k<escaped key>``: one document per key: ``key``, ``value`` (bytes, the
  hastate codec), ``mod_revision``, ``create_revision``, ``version``, ``lease`` (0: none).
  Document ids escape the key (``k`` + percent-encoding) because Firestore ids may not hold
  ``/``, be ``.``/``..`` or look like ``__x__``.
* ``<prefix>_meta/revision``: the cluster ``revision``; every write transaction that
  changes keys reads and updates it, so revisions are etcd-style and gapless. This makes the
  cluster's writes one serial stream (see docs/engine-firestore.md for the throughput).
* ``<prefix>_changes/<revision, 20 digits>``: the changes made at one revision, for the
  change feed and watchers; trimmed by the leader to ``change_log_retention`` revisions.
* ``<prefix>_clients/<client hex>_<seq>``: the result of a write, written in the write's own
  transaction and read first by a retry (exactly once).
* ``<prefix>_leases/<id>`` (ids from the counter ``<prefix>_meta/leases``),
  ``<prefix>_meta/leader``, ``<prefix>_members/<instance>``.

Every document read or written by this engine is counted by :class:`Costs` (Firestore bills
per document), exposed in ``status()["firestore_costs"]``.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any, Callable, TypeVar
from urllib.parse import quote

from google.api_core import exceptions as gexc
from google.cloud import firestore

from hastate.engines.firestore.settings import FirestoreSettings
from hastate.errors import WriteError
from hastate.state.txn import Record

T = TypeVar("T")

#: Errors after which a retried transaction may succeed (the store was busy or unreachable).
TRANSIENT = (gexc.Aborted, gexc.ServiceUnavailable, gexc.DeadlineExceeded,
             gexc.InternalServerError, gexc.TooManyRequests, gexc.Unknown, gexc.Cancelled)
#: Seconds a client's write result is kept for retries (a retry comes within the timeout).
DEDUP_SECONDS = 3600.0
#: Every read of a transaction: no client-side retry (the transaction is retried as a whole,
#: within the caller's deadline) and a bounded wait, so a write's timeout is kept.
RPC: dict[str, Any] = {"retry": None, "timeout": 5.0}
#: Documents one Firestore transaction may write.
MAX_WRITES = 500


def doc_id(key: str) -> str:
    """The document id of state key ``key`` (reversible; never ``.``, ``..`` or ``__x__``)."""
    return "k" + quote(key, safe="")


def change_id(revision: int) -> str:
    """Change-log document ids sort by revision."""
    return f"{revision:020d}"


class Costs:
    """Documents read and written, per operation (what Firestore bills)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()

    def read(self, op: str, documents: int = 1) -> None:
        """``documents`` billed reads (a get of a missing document or an empty query bills 1)."""
        with self._lock:
            self.reads[op] += max(1, documents)

    def write(self, op: str, documents: int = 1) -> None:
        with self._lock:
            self.writes[op] += documents

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"reads": dict(self.reads), "writes": dict(self.writes),
                    "total": {"reads": sum(self.reads.values()),
                              "writes": sum(self.writes.values())}}


class Store:
    """One instance's client and the cluster's collections."""

    def __init__(self, settings: FirestoreSettings) -> None:
        self.settings = settings
        kwargs: dict[str, Any] = {"project": settings.project, "database": settings.database}
        self.client = firestore.Client(**kwargs)
        p = settings.prefix
        self.state = self.client.collection(f"{p}_state")
        self.meta = self.client.collection(f"{p}_meta")
        self.changes = self.client.collection(f"{p}_changes")
        self.clients = self.client.collection(f"{p}_clients")
        self.lease_docs = self.client.collection(f"{p}_leases")
        self.members = self.client.collection(f"{p}_members")
        self.revision_ref = self.meta.document("revision")
        self.leader_ref = self.meta.document("leader")
        self.lease_counter_ref = self.meta.document("leases")
        self.costs = Costs()

    def state_ref(self, key: str) -> Any:
        return self.state.document(doc_id(key))

    def change_ref(self, revision: int) -> Any:
        return self.changes.document(change_id(revision))

    def client_ref(self, client: bytes, seq: int) -> Any:
        return self.clients.document(f"{client.hex()}_{seq}")

    def lease_ref(self, lease: int) -> Any:
        return self.lease_docs.document(str(lease))

    def prefix_query(self, prefix: str) -> Any:
        """State documents whose key starts with ``prefix`` (every one for "")."""
        if not prefix:
            return self.state
        from google.cloud.firestore_v1.base_query import FieldFilter
        return self.state.where(filter=FieldFilter("key", ">=", prefix)) \
            .where(filter=FieldFilter("key", "<", prefix + "\U0010ffff"))

    def run(self, op: str, body: Callable[[Any], T], *, deadline: float,
            read_only: bool = False) -> T:
        """Run ``body(transaction)`` in a Firestore transaction until it commits.

        Contention (Aborted) and transient errors retry until ``deadline`` (monotonic). A
        failure raises WriteError; ``outcome_unknown`` when a commit was sent and its answer
        lost (the body must then be safe to run again: writes carry their dedup document).
        """
        committing = False
        attempts = 0
        while True:
            attempts += 1
            reached = [False]

            def attempt(tx: Any) -> T:
                out = body(tx)
                reached[0] = True
                return out

            tx = self.client.transaction(max_attempts=1, read_only=read_only)
            try:
                return firestore.transactional(attempt)(tx)
            except (ValueError, *TRANSIENT) as exc:
                cause = exc.__cause__ if isinstance(exc, ValueError) else exc
                if isinstance(exc, ValueError) and not isinstance(cause, gexc.Aborted):
                    raise
                contention = isinstance(cause, gexc.Aborted)
                committing = committing or (reached[0] and not contention)
                if time.monotonic() >= deadline:
                    raise WriteError(f"firestore {op} did not commit before its deadline "
                                     f"after {attempts} attempt(s): {cause}",
                                     outcome_unknown=committing) from None
                # Jittered backoff: contending writers (all bump one counter) spread out.
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2 ** attempts)) if contention
                           else 0.1)


def record_of(fields: dict[str, Any]) -> Record:
    """The (value, mod_revision, create_revision, version) of a state document's fields."""
    return (bytes(fields["value"]), fields["mod_revision"], fields["create_revision"],
            fields["version"])


def state_fields(key: str, record: Record, lease: int) -> dict[str, Any]:
    """A state document's fields for ``key`` at ``record``, attached to ``lease`` (0: none)."""
    value, mod, create, version = record
    return {"key": key, "value": value, "mod_revision": mod, "create_revision": create,
            "version": version, "lease": lease}
