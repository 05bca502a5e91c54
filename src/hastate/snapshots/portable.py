"""Disaster recovery on any engine: export a running cluster's state, load it into another.

:func:`take` asks the engine for a consistent export (:meth:`Engine.export`: every key with
its revisions and every lease with its keys, at one revision) and uploads it in the
snapshot format of :mod:`hastate.snapshots.format`, to its own manifest (by default
``<[snapshots] store>/exports``, so it never mixes with the Raft engine's periodic
snapshots and their log segments). :func:`load_into` writes a snapshot (an export, or a Raft
periodic snapshot) into a running, empty cluster through the public API: leases are granted
again with their TTL, then keys are put in batched transactions, oldest mod_revision first,
each key attached to its lease's new id. The target's revisions are its own: a key written
before another in the source is written no later in the target (same or later batch), so
revision order is kept; create_revision and version start afresh.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Iterable, Iterator, Protocol

from hastate.errors import RestoreTargetNotEmptyError
from hastate.snapshots.format import (MANIFEST_ATTEMPTS, StaleSnapshotError, list_snapshots,
                                      load, write_snapshot)
from hastate.snapshots.store import SnapshotStore
from hastate.state import txn
from hastate.state.codec import decode_value
from hastate.state.export import KIND, StateExport
from hastate.state.txn import Record



class Manager(Protocol):
    """What take and load read of the manager (``StateManager`` has it; naming that class
    here would make the server, which imports this module, import the manager)."""

    cluster: str
    engine: Any
    txn_limits: dict[str, int]

    def get_state(self, consistency: Any = ..., **kwargs: Any) -> Any: ...

    def grant_lease(self, ttl: float, *, timeout: float | None = None) -> Any: ...

    def transaction(self, compare: Iterable[txn.Compare] = (), success: Iterable[txn.Op] = (),
                    failure: Iterable[txn.Op] = (), *,
                    timeout: float | None = None) -> txn.TxnResult: ...

logger = logging.getLogger(__name__)

#: Sub-path of the ``[snapshots] store`` URL where exports live by default.
EXPORTS = "exports"
#: Per-key overhead of a put and its compare in a transaction's wire form (bytes, generous).
_KEY_OVERHEAD = 64


def exports_url(store_url: str) -> str:
    """The default exports store under a ``[snapshots] store`` URL."""
    return f"{store_url.rstrip('/')}/{EXPORTS}"


@dataclass(frozen=True)
class Taken:
    """What :func:`take` uploaded."""

    name: str
    revision: int
    keys: int
    leases: int
    size: int
    sha256: str
    engine: str

    def summary(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Loaded:
    """What :func:`load_into` wrote."""

    name: str
    source_revision: int
    keys: int
    leases: int
    batches: int
    first_revision: int | None
    last_revision: int | None
    seconds: float

    def summary(self) -> dict[str, Any]:
        return dict(self.__dict__)


def take(manager: Manager, store: SnapshotStore, timeout: float | None = None) -> Taken:
    """Export ``manager``'s cluster at one revision and list it first in ``store``'s manifest.

    Exports are numbered one after another in their store (the snapshot ``index``); the
    revision they were read at is the name's second number (the ``term`` field) and
    ``extra["revision"]`` of the header. Two exports racing for one number: the one listed
    second takes the next (at the same revision they hold the same state, and the stored
    one is listed once).
    """
    export = manager.engine.export(timeout)
    for attempt in range(MANIFEST_ATTEMPTS):
        listed = list_snapshots(store)
        try:
            meta = write_snapshot(store, export.to_body(), cluster=manager.cluster,
                                  index=listed[0].index + 1 if listed else 1,
                                  term=export.revision, keys=len(export.records),
                                  extra={"kind": KIND, "engine": manager.engine.name,
                                         "revision": export.revision})
            break
        except StaleSnapshotError:
            if attempt == MANIFEST_ATTEMPTS - 1:
                raise
    logger.info("state exported", extra={"snapshot": meta.name, "revision": export.revision,
                                         "keys": len(export.records)})
    return Taken(meta.name, export.revision, len(export.records), len(export.leases),
                 meta.size, meta.sha256, manager.engine.name)


def batches(records: dict[str, Record], max_ops: int,
            max_bytes: int) -> Iterator[list[tuple[str, Record]]]:
    """Keys in mod_revision order, cut into batches of at most ``max_ops`` keys and about
    ``max_bytes`` encoded; keys of one source revision share a batch when they fit."""
    ordered = sorted(records.items(), key=lambda item: (item[1][1], item[0]))
    batch: list[tuple[str, Record]] = []
    size = 0
    for _, group in groupby(ordered, key=lambda item: item[1][1]):
        items = list(group)
        group_size = sum(_cost(key, record) for key, record in items)
        if batch and (len(batch) + len(items) > max_ops or size + group_size > max_bytes):
            yield batch
            batch, size = [], 0
        for key, record in items:            # a group larger than a batch is split
            if batch and (len(batch) >= max_ops or size + _cost(key, record) > max_bytes):
                yield batch
                batch, size = [], 0
            batch.append((key, record))
            size += _cost(key, record)
    if batch:
        yield batch


def _cost(key: str, record: Record) -> int:
    return len(key.encode()) + len(record[0]) + _KEY_OVERHEAD


def load_into(manager: Manager, store: SnapshotStore, *, name: str | None = None,
              cluster: str | None = None, timeout: float | None = None) -> Loaded:
    """Write snapshot ``name`` (default: the newest listed) into ``manager``'s running cluster.

    The snapshot is fully verified first (manifest, size, SHA-256, header, cluster: see
    :func:`hastate.snapshots.format.load`; ``cluster`` defaults to the target's name).

    :raises CorruptDataError: the snapshot failed a check (nothing written).
    :raises SnapshotNotFoundError: no such snapshot.
    :raises RestoreTargetNotEmptyError: the target holds keys (nothing written), or a key
        appeared in it during the restore (the message says how far it got).
    """
    started = time.monotonic()
    meta, body = load(store, cluster=cluster or manager.cluster, name=name)
    export = StateExport.from_body(body, source=meta.name)
    present, _ = manager.get_state("linearizable", timeout=timeout, with_revision=True)
    if present:
        raise RestoreTargetNotEmptyError(
            f"cluster {manager.cluster!r} already holds {len(present)} keys (e.g. "
            f"{sorted(present)[:3]}); a restore never overwrites: restore into a fresh "
            "cluster, or delete the keys first")
    lease_ids = {old: manager.grant_lease(ttl, timeout=timeout).id
                 for old, (ttl, _keys) in sorted(export.leases.items())}
    owner = {key: lease_ids[old] for old, (_ttl, keys) in export.leases.items()
             for key in keys}
    written = [_write_batch(manager, batch, owner, timeout, done)
               for done, batch in enumerate(batches(
                   dict(export.records), manager.txn_limits["max_ops"],
                   manager.txn_limits["max_bytes"] // 2))]
    loaded = Loaded(meta.name, export.revision, len(export.records), len(lease_ids),
                    len(written), written[0] if written else None,
                    written[-1] if written else None, round(time.monotonic() - started, 3))
    logger.info("snapshot loaded into the running cluster", extra=loaded.summary())
    return loaded


def _write_batch(manager: Manager, batch: list[tuple[str, Record]],
                 owner: dict[str, int], timeout: float | None, done: int) -> int:
    """Put one batch if none of its keys exists yet; return the batch's revision."""
    result = manager.transaction(
        [txn.missing(key) for key, _ in batch],
        [txn.put(key, decode_value(record[0]), lease=owner.get(key, 0))
         for key, record in batch], timeout=timeout)
    if not result.succeeded:
        raise RestoreTargetNotEmptyError(
            f"restore stopped at batch {done + 1}: one of {[k for k, _ in batch][:3]} was "
            f"written in the target during the restore; the {done} batches before it are "
            "written. Stop the writers, then restore into a fresh cluster")
    return result.revision
