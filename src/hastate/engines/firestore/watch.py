"""This instance's mirror of the state, fed in revision order by a snapshot listener on the
change log, and the watchers served from it.

At start (and after a gap) one read-only transaction reads the revision counter, every state
document and the change log's newest revisions, consistently; the mirror takes that state
and the :class:`~hastate.state.watch.WatchHub` that history (so watchers may resume from
before this instance started, as far back as the change log holds). Then a Firestore
snapshot listener on ``<prefix>_changes`` (``revision > mirror``, ordered by revision)
hands over each new change-log document; they are applied strictly in revision order.
When the instance knows of a newer revision (its own write, a linearizable read) and the
listener has delivered nothing for :data:`STALL` seconds (it reconnects with a backoff after
the store was unreachable), the feed queries the change log itself; an instance that
heard nothing for :data:`HEARTBEAT` seconds reads the revision counter to learn whether it
lags (and whether the store went back).

Why no gap and no duplicate: every write transaction reads and bumps one counter and writes
its change document with it, so the change documents visible in any consistent snapshot
are contiguous up to the counter. A listener delivers consistent snapshots; a revision
missing below one delivered was trimmed (older than ``change_log_retention``), and the
mirror reloads (watchers that still needed it end with CompactedError). Duplicates (a
listener re-sending documents after it reconnects) are dropped by revision.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from typing import Any, Iterable, Sequence

from google.cloud.firestore_v1.base_query import FieldFilter

from hastate.engines.firestore.store import RPC, Store, record_of
from hastate.errors import HAStateError, StoreRegressedError
from hastate.state.codec import decode_value
from hastate.state.history import Change
from hastate.state.machine import ChangeListener
from hastate.state.txn import Record
from hastate.state.watch import WatchHub

logger = logging.getLogger(__name__)

#: Seconds the listener may lag behind a revision this instance knows of before the feed
#: reads the change log itself.
STALL = 1.0
#: Seconds without a delivery after which the feed reads the revision counter (one read).
HEARTBEAT = 5.0
#: Change documents one catch-up query reads.
CATCH_UP = 500


class Mirror:
    """The state as of :attr:`revision`: key -> (record, lease)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._data: dict[str, tuple[Record, int]] = {}
        self.revision = 0

    def load(self, revision: int, data: dict[str, tuple[Record, int]]) -> None:
        with self._cond:
            self._data, self.revision = data, revision
            self._cond.notify_all()

    def apply(self, revision: int, entries: Sequence[dict[str, Any]]) -> list[Change]:
        """Apply one change-log document; returns its changes for the watchers."""
        changes = []
        with self._cond:
            for e in entries:
                old = self._data.get(e["k"])
                if e["t"] == "put":
                    value = bytes(e["v"])
                    self._data[e["k"]] = ((value, revision, e["c"], e["n"]), int(e["l"]))
                else:
                    self._data.pop(e["k"], None)
                    value = None
                changes.append(Change(e["t"], e["k"], revision, value, e["c"], e["n"],
                                      old[0][0] if old is not None else None))
            self.revision = revision
            self._cond.notify_all()
        return changes

    def wait_for(self, revision: int, timeout: float) -> bool:
        """Wait until the mirror reached ``revision``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.revision >= revision, timeout)

    def snapshot_at(self, keys: Iterable[str] | None) -> tuple[dict[str, Any], int]:
        with self._cond:
            items = list(self._data.items()) if keys is None else \
                [(k, self._data[k]) for k in keys if k in self._data]
            revision = self.revision
        return {k: decode_value(rec[0]) for k, (rec, _) in items}, revision

    def records(self, keys: Iterable[str]) -> dict[str, Record]:
        with self._cond:
            return {k: self._data[k][0] for k in keys if k in self._data}

    def scan(self, prefix: str) -> tuple[list[tuple[str, Record]], int]:
        """(key, record) of the keys under ``prefix`` and the revision they reflect."""
        with self._cond:
            return ([(k, rec) for k, (rec, _) in self._data.items() if k.startswith(prefix)],
                    self.revision)

    def export(self) -> tuple[int, dict[str, Record], dict[int, set[str]]]:
        """The revision, every record and every lease's attached keys, at one revision."""
        attached: dict[int, set[str]] = {}
        with self._cond:
            for key, (_, lease) in self._data.items():
                if lease:
                    attached.setdefault(lease, set()).add(key)
            return self.revision, {k: rec for k, (rec, _) in self._data.items()}, attached

    def revisions(self) -> dict[str, int]:
        with self._cond:
            return {k: rec[1] for k, (rec, _) in self._data.items()}

    def __len__(self) -> int:
        return len(self._data)

    def state_hash(self) -> str:
        """SHA-256 over the sorted state, as the Raft engine computes it."""
        digest = hashlib.sha256()
        with self._cond:
            for key in sorted(self._data):
                value, mod, create, version = self._data[key][0]
                digest.update(key.encode())
                digest.update(value)
                digest.update(f"{mod}:{create}:{version}".encode())
        return digest.hexdigest()


def _history(docs: Iterable[Any]) -> list[tuple[int, list[Change]]]:
    """(revision, changes) of change-log documents (``prev`` of the first ones included)."""
    out = []
    for snap in docs:
        fields = snap.to_dict()
        rev = fields["revision"]
        out.append((rev, [Change(e["t"], e["k"], rev, bytes(e["v"]) if e["v"] is not None
                                 else None, e["c"], e["n"],
                                 bytes(e["p"]) if e["p"] is not None else None)
                          for e in fields["changes"]]))
    return out


class ChangeFeed:
    """Keeps :class:`Mirror` and the watch hub (then any other change listener, in the order
    added) up to date from the change log."""

    def __init__(self, store: Store, hub: WatchHub, *, history: int) -> None:
        self.store = store
        self._sinks: list[ChangeListener] = [hub]
        self.mirror = Mirror()
        self.history = history
        self._queue: queue.Queue[list[tuple[int, list[dict[str, Any]]]]] = queue.Queue()
        self._stop = threading.Event()
        self._listener: Any = None
        self._thread: threading.Thread | None = None
        self.reloads = 0
        self.catch_ups = 0
        self.fatal_error: str | None = None
        self._known = 0             # the newest revision this instance knows committed

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.load()
        self._listen()
        self._thread = threading.Thread(target=self._loop, name="hastate-firestore-feed",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.unsubscribe()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.is_active

    # -- loading --------------------------------------------------------------------------
    def load(self) -> None:
        """Read the state, the counter and the change log's tail at one snapshot."""
        def body(tx: Any) -> tuple[int, dict[str, tuple[Record, int]], list]:
            meta = self.store.revision_ref.get(transaction=tx, **RPC)
            revision = int(meta.get("revision")) if meta.exists else 0
            docs = self.store.state.get(transaction=tx, **RPC)
            tail = self.store.changes.where(
                filter=FieldFilter("revision", ">", max(0, revision - self.history))) \
                .order_by("revision").get(transaction=tx, **RPC)
            self.store.costs.read("load", 1 + len(docs) + len(tail))
            data = {}
            for snap in docs:
                fields = snap.to_dict()
                data[fields["key"]] = (record_of(fields), int(fields.get("lease", 0)))
            return revision, data, tail

        revision, data, tail = self.store.run("load", body, deadline=time.monotonic() + 30,
                                              read_only=True)
        self.check_revision(revision)
        self.mirror.load(revision, data)
        history = _history(tail)
        for sink in self._sinks:
            sink.reset(revision, history)
        logger.info("firestore state loaded", extra={"revision": revision, "keys": len(data)})

    def add_listener(self, listener: ChangeListener) -> None:
        """Feed ``listener`` every change after the watch hub (before :meth:`start`)."""
        self._sinks.append(listener)

    def known(self, revision: int) -> None:
        """Revision ``revision`` is committed (the feed catches up by itself if it lags)."""
        self._known = max(self._known, revision)

    def check_revision(self, revision: int) -> None:
        """Raise (and remember) StoreRegressedError when the store's counter went back."""
        self.known(revision)
        if revision < self.mirror.revision:
            self.fatal_error = (f"the store's revision went back from {self.mirror.revision} "
                                f"to {revision}: it lost acknowledged writes (an emulator "
                                "restarted without its data?); restart the bots on purpose "
                                "to accept the store as it is now")
            logger.error("firestore store regressed", extra={"error": self.fatal_error})
        if self.fatal_error is not None:
            raise StoreRegressedError(self.fatal_error)

    # -- listening ------------------------------------------------------------------------
    def _listen(self) -> None:
        query = self.store.changes.where(
            filter=FieldFilter("revision", ">", self.mirror.revision)).order_by("revision")
        self._listener = query.on_snapshot(self._on_snapshot)

    def _on_snapshot(self, _docs: Any, changes: Any, _read_time: Any) -> None:
        batch = [(c.document.get("revision"), c.document.get("changes")) for c in changes
                 if c.type.name != "REMOVED"]
        if batch:
            self.store.costs.read("watch", len(batch))
        self._queue.put(batch)

    def _loop(self) -> None:
        pending: dict[int, list[dict[str, Any]]] = {}
        heard = time.monotonic()
        while not self._stop.is_set():
            try:
                batch = self._queue.get(timeout=STALL)
                heard = time.monotonic()
            except queue.Empty:
                if self._stop.is_set():
                    return
                if not self.listening:
                    self._restart("the snapshot listener stopped")
                    continue
                if time.monotonic() - heard >= HEARTBEAT:
                    heard = time.monotonic()
                    self._heartbeat()
                if self._known <= self.mirror.revision:
                    continue
                batch = self._catch_up()
            for revision, entries in batch:
                if revision > self.mirror.revision:
                    pending[revision] = entries
            while self.mirror.revision + 1 in pending:
                revision = self.mirror.revision + 1
                changes = self.mirror.apply(revision, pending.pop(revision))
                for sink in self._sinks:
                    sink.changed(revision, changes)
            if pending:
                self._restart(f"revision {self.mirror.revision + 1} left the change log "
                              f"before this instance saw it (next held: {min(pending)})")
                pending.clear()

    def _heartbeat(self) -> None:
        """Read the revision counter: does this instance lag, did the store go back?"""
        try:
            snap = self.store.revision_ref.get(**RPC)
        except Exception as exc:     # unreachable: the next round tries again
            logger.warning("revision counter unreadable", extra={"error": str(exc)})
            return
        self.store.costs.read("heartbeat")
        try:
            self.check_revision(int(snap.get("revision")) if snap.exists else 0)
        except StoreRegressedError:
            pass                     # remembered: reads and writes now refuse

    def _catch_up(self) -> list[tuple[int, list[dict[str, Any]]]]:
        """The change documents after the mirror, read directly (the listener lags)."""
        self.catch_ups += 1
        try:
            docs = self.store.changes.where(
                filter=FieldFilter("revision", ">", self.mirror.revision)) \
                .order_by("revision").limit(CATCH_UP).get(timeout=10)
        except Exception as exc:     # unreachable: the next round tries again
            logger.warning("change log catch-up failed", extra={"error": str(exc)})
            return []
        self.store.costs.read("watch", len(docs))
        return [(d.get("revision"), d.get("changes")) for d in docs]

    def _restart(self, why: str) -> None:
        """Reload at one snapshot and listen again (a gap or a dead listener)."""
        logger.warning("firestore change feed restarts", extra={"reason": why})
        if self._listener is not None:
            self._listener.unsubscribe()
        self.reloads += 1
        try:
            self.load()
            self._listen()
        except HAStateError as exc:
            logger.error("firestore change feed cannot restart", extra={"error": str(exc)})
            self._stop.wait(1.0)
