"""This instance's copy of the cluster's prefix, kept current by one etcd watch.

Loaded by one range of the whole prefix at revision R, then fed by a watch from R + 1: the
state keys (``kv/``) with their etcd records, the lease each is attached to, hastate's lease
registry, the leader and handover keys and the members' entries. Every state change is handed
to the :class:`~hastate.state.watch.WatchHub` at its etcd revision, so local reads, records
and watches behave as on the Raft engine. When etcd has compacted past the watch (a long
disconnection), the mirror reloads and the hub's older watchers end with CompactedError.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from hastate.engines.etcd.client import EtcdClient, b64, header_revision, range_end, unb64
from hastate.engines.etcd.commands import kv_record
from hastate.engines.etcd.keys import Layout
from hastate.engines.etcd.watch import Batch, EtcdWatch
from hastate.errors import CompactedError, WatchError
from hastate.state.codec import decode_value
from hastate.state.history import Change
from hastate.state.leases import LeaseInfo
from hastate.state.machine import ChangeListener
from hastate.state.txn import Record
from hastate.state.watch import WatchHub

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyInfo:
    """An internal key as the mirror saw it last."""

    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


class Mirror:
    """See the module docstring; ``on_change`` runs after each batch that touched
    hastate's own keys (leader, handover, members)."""

    def __init__(self, client: EtcdClient, layout: Layout, hub: WatchHub,
                 on_change: Callable[[], None]) -> None:
        self.client = client
        self.layout = layout
        self.hub = hub
        self.on_change = on_change
        self._cond = threading.Condition()
        self.data: dict[str, Record] = {}
        self.key_lease: dict[str, int] = {}
        self.registry: dict[int, tuple[float, int]] = {}     # lease -> (ttl, granted at)
        self.leader: KeyInfo | None = None
        self.handover: KeyInfo | None = None
        self.members: dict[str, KeyInfo] = {}
        self.revision = 0
        self.loaded = False
        self.watch: EtcdWatch | None = None
        self.fatal: str | None = None       # why the mirror gave up (reload failed)
        self._listeners: list[ChangeListener] = []
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Load the prefix and start following it."""
        self._load()

    def _load(self) -> None:
        prefix = self.layout.prefix
        answer = self.client.call("/v3/kv/range", {"key": b64(prefix),
                                                  "range_end": b64(range_end(prefix))})
        revision = header_revision(answer)
        with self._cond:
            self.data.clear()
            self.key_lease.clear()
            self.registry.clear()
            self.members.clear()
            self.leader = self.handover = None
            for kv in answer.get("kvs") or []:
                self._apply_put(unb64(kv["key"]), kv)
            self.revision = revision
            self.loaded = True
            self._cond.notify_all()
        self.hub.reset(revision, [])
        for listener in self._listeners:
            listener.reset(revision, [])
        self.watch = EtcdWatch(self.client, prefix, range_end(prefix), revision + 1,
                               on_batch=self._on_batch, on_error=self._on_error,
                               name="hastate-etcd-mirror").start()
        self.on_change()

    def stop(self) -> None:
        self._stopped = True
        if self.watch is not None:
            self.watch.stop()
        with self._cond:
            self._cond.notify_all()

    def restart_watch(self) -> None:
        """The stream seems stalled: reopen it (from the next revision)."""
        if self.watch is not None:
            logger.warning("etcd mirror stalled; reopening its watch",
                           extra={"revision": self.revision})
            self.watch.restart()

    def _on_error(self, error: WatchError) -> None:
        if self._stopped:
            return
        if isinstance(error, CompactedError):
            logger.warning("etcd compacted past the mirror; reloading",
                           extra={"revision": self.revision,
                                  "oldest": error.oldest_revision})
            try:
                self._load()
            except Exception as exc:
                logger.exception("etcd mirror reload failed")
                self.fatal = f"the local mirror of etcd could not be reloaded: {exc!r}"
                self.hub.close()
            return
        logger.error("etcd mirror watch ended: %s", error)

    # -- feed ---------------------------------------------------------------------------
    def _on_batch(self, batch: Batch, header: int) -> None:
        internal = False
        for revision, events in batch:
            changes: list[Change] = []
            with self._cond:
                for event in events:
                    key = unb64(event["kv"]["key"])
                    if event.get("type") == "DELETE":
                        change = self._apply_delete(key, revision)
                    else:
                        change = self._apply_put(key, event["kv"])
                    if change is None:
                        internal = True
                    elif change is not True:
                        changes.append(change)
                self.revision = revision
            if changes:
                self.hub.changed(revision, changes)
                for listener in self._listeners:
                    try:
                        listener.changed(revision, changes)
                    except Exception:   # a listener must never stop the mirror
                        logger.exception("change listener failed",
                                         extra={"revision": revision})
        with self._cond:
            if not batch:           # a progress notification: nothing up to header is left
                self.revision = max(self.revision, header)
            self._cond.notify_all()
        if internal:
            self.on_change()

    def _apply_put(self, key: bytes, kv: dict[str, Any]) -> Change | None | bool:
        """Record a put; a Change for a state key, None for hastate's own keys, True for
        keys that need no one's attention (markers)."""
        lease = int(kv.get("lease", 0))
        state_key = self.layout.state_key(key)
        if state_key is not None:
            record = kv_record(kv)
            old = self.data.get(state_key)
            self.data[state_key] = record
            if lease:
                self.key_lease[state_key] = lease
            else:
                self.key_lease.pop(state_key, None)
            return Change("put", state_key, record[1], record[0], record[2], record[3],
                          old[0] if old is not None else None)
        info = KeyInfo(unb64(kv.get("value")), int(kv.get("create_revision", 0)),
                       int(kv.get("mod_revision", 0)), lease)
        if key == self.layout.leader:
            self.leader = info
        elif key == self.layout.handover:
            self.handover = info
        elif key.startswith(self.layout.members):
            self.members[key[len(self.layout.members):].decode()] = info
        elif key.startswith(self.layout.leases):
            try:
                self.registry[int(key[len(self.layout.leases):])] = (
                    float(info.value.decode()), info.create_revision)
            except ValueError:
                pass
            return True
        else:
            return True
        return None

    def _apply_delete(self, key: bytes, revision: int) -> Change | None | bool:
        state_key = self.layout.state_key(key)
        if state_key is not None:
            old = self.data.pop(state_key, None)
            self.key_lease.pop(state_key, None)
            return Change("delete", state_key, revision, None, 0, 0,
                          old[0] if old is not None else None)
        if key == self.layout.leader:
            self.leader = None
        elif key == self.layout.handover:
            self.handover = None
        elif key.startswith(self.layout.members):
            self.members.pop(key[len(self.layout.members):].decode(), None)
        elif key.startswith(self.layout.leases):
            try:
                self.registry.pop(int(key[len(self.layout.leases):]), None)
            except ValueError:
                pass
            return True
        else:
            return True
        return None

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Feed ``listener`` every state change after the watch hub, and each reload."""
        self._listeners.append(listener)

    # -- reads --------------------------------------------------------------------------
    def wait_revision(self, revision: int, timeout: float) -> bool:
        """Wait until the mirror holds everything up to ``revision``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.revision >= revision or self._stopped,
                                       timeout) and self.revision >= revision

    def record(self, key: str) -> Record | None:
        with self._cond:
            return self.data.get(key)

    def records(self, keys: Iterable[str]) -> dict[str, Record]:
        with self._cond:
            return {k: self.data[k] for k in keys if k in self.data}

    def snapshot(self, keys: Iterable[str] | None) -> tuple[dict[str, Any], int]:
        with self._cond:
            items = list(self.data.items()) if keys is None else \
                [(k, self.data[k]) for k in keys if k in self.data]
            revision = self.revision
        return {k: decode_value(r[0]) for k, r in items}, revision

    def scan(self, prefix: str) -> tuple[list[tuple[str, Record]], int]:
        """(key, record) of the state keys under ``prefix`` and the revision they reflect."""
        with self._cond:
            return [(k, r) for k, r in self.data.items() if k.startswith(prefix)], \
                self.revision

    def revisions(self) -> dict[str, int]:
        with self._cond:
            return {k: r[1] for k, r in self.data.items()}

    def leases(self) -> dict[int, LeaseInfo]:
        with self._cond:
            keys: dict[int, set[str]] = {}
            for key, lease in self.key_lease.items():
                keys.setdefault(lease, set()).add(key)
            return {lease: LeaseInfo(lease, ttl, granted, frozenset(keys.get(lease, ())))
                    for lease, (ttl, granted) in self.registry.items()}

    def has_lease(self, lease: int) -> bool:
        with self._cond:
            return lease in self.registry

    def member_entries(self) -> dict[str, dict[str, Any]]:
        """instance id -> its published entry (health, region, http, lease)."""
        with self._cond:
            items = list(self.members.items())
        out = {}
        for instance, info in items:
            try:
                out[instance] = json.loads(info.value)
            except ValueError:
                continue
        return out
