"""One :class:`~hastate.state.codec.Command` as one Firestore transaction.

The semantics are the state machine's: transactions run :func:`hastate.state.txn.run` on
the documents they touch, leases follow :mod:`hastate.state.leases`, and every command
returns the same result tuple the Raft engine's state machine returns. What differs is only
where the state lives: each command reads the documents it needs (the revision counter, its
keys, the leases involved, its own dedup document) inside the transaction, then writes the
changed documents, the next revision, that revision's change-log document and its dedup
document, all committed atomically or not at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import msgpack

from hastate.engines.firestore.store import (DEDUP_SECONDS, RPC, Store, record_of,
                                             state_fields)
from hastate.state import txn as txn_mod
from hastate.state.codec import Command
from hastate.state.history import Change
from hastate.state.leases import check_id, check_ttl
from hastate.state.txn import Record

#: Ops safe to run twice (a repeated keep-alive refreshes twice; a barrier changes nothing):
#: they skip the dedup document, which saves a read and a write each.
IDEMPOTENT = ("barrier", "lease_keepalive")


@dataclass
class Outcome:
    """What a committed command did: its result tuple and the revision's changes."""

    result: tuple
    revision: int
    changes: list[Change] = field(default_factory=list)
    base: int = -1          # the revision counter the transaction read (-1: a dedup hit)


def encode_result(result: tuple) -> bytes:
    return msgpack.packb(list(result), use_bin_type=True)


def decode_result(raw: bytes) -> tuple:
    return tuple(msgpack.unpackb(raw, raw=False))


class _View:
    """The documents one transaction read, cached (every read precedes the first write)."""

    def __init__(self, store: Store, tx: Any, op: str) -> None:
        self.store, self.tx, self.op = store, tx, op
        self.data: dict[str, tuple[Record, int]] = {}     # key -> (record, lease)
        self.absent: set[str] = set()
        self.lease_docs: dict[int, dict[str, Any] | None] = {}
        self.meta: dict[str, Any] | None = None
        self.changes: list[Change] = []

    @property
    def revision(self) -> int:
        """The revision counter, read on first use: as late as possible in the transaction,
        so that concurrent writers (which all bump it) overlap as little as possible."""
        if self.meta is None:
            snap = self.store.revision_ref.get(transaction=self.tx, **RPC)
            self.store.costs.read(self.op)
            self.meta = snap.to_dict() if snap.exists else {}
        return int(self.meta.get("revision", 0))

    def next_lease(self) -> int:
        """Take the next lease id from its own counter (grants never touch the revision)."""
        snap = self.store.lease_counter_ref.get(transaction=self.tx, **RPC)
        self.store.costs.read(self.op)
        lease = int(snap.get("next")) if snap.exists else 1
        self.tx.set(self.store.lease_counter_ref, {"next": lease + 1})
        self.store.costs.write(self.op)
        return lease

    def read_keys(self, keys: Iterable[str]) -> None:
        wanted = sorted({k for k in keys if k not in self.data and k not in self.absent})
        if not wanted:
            return
        refs = [self.store.state_ref(k) for k in wanted]
        found = {}
        for snap in self.store.client.get_all(refs, transaction=self.tx, **RPC):
            if snap.exists:
                fields = snap.to_dict()
                found[fields["key"]] = (record_of(fields), int(fields.get("lease", 0)))
        self.store.costs.read(self.op, len(wanted))
        for key in wanted:
            if key in found:
                self.data[key] = found[key]
            else:
                self.absent.add(key)

    def read_prefix(self, prefix: str) -> None:
        docs = self.store.prefix_query(prefix).get(transaction=self.tx, **RPC)
        self.store.costs.read(self.op, len(docs))
        for snap in docs:
            fields = snap.to_dict()
            self.data[fields["key"]] = (record_of(fields), int(fields.get("lease", 0)))
            self.absent.discard(fields["key"])

    def read_leases(self, leases: Iterable[int]) -> None:
        wanted = sorted({lease for lease in leases if lease and lease not in self.lease_docs})
        if not wanted:
            return
        snaps = self.store.client.get_all([self.store.lease_ref(i) for i in wanted],
                                          transaction=self.tx, **RPC)
        self.store.costs.read(self.op, len(wanted))
        got = {int(s.id): s.to_dict() for s in snaps if s.exists}
        for lease in wanted:
            self.lease_docs[lease] = got.get(lease)

    def records(self) -> dict[str, Record]:
        return {key: record for key, (record, _) in self.data.items()}


def execute(store: Store, tx: Any, command: Command) -> Outcome:
    """Run ``command`` in transaction ``tx`` (the caller commits). Exactly once: a command
    with a client id whose dedup document exists returns the stored result. Ops that change
    no key (lease grants and keep-alives) do not touch the revision counter."""
    view = _View(store, tx, command.op)
    dedup = store.client_ref(command.client, command.seq) \
        if command.client and command.op not in IDEMPOTENT else None
    if dedup is not None:
        snap = dedup.get(transaction=tx, **RPC)
        store.costs.read(command.op)
        if snap.exists:
            return Outcome(decode_result(snap.get("result")), -1)
    outcome = _run(view, command)
    outcome.base = view.revision if view.meta is not None else -1
    if dedup is not None:
        tx.set(dedup, {"result": encode_result(outcome.result),
                       "expire_at": time.time() + DEDUP_SECONDS})
        store.costs.write(command.op)
    return outcome


def _run(view: _View, command: Command) -> Outcome:
    op = command.op
    if op == "barrier":
        return Outcome(("ok", view.revision, view.revision), view.revision)
    if op in Command.LEASE_OPS:
        return _lease(view, command)
    if op == "txn":
        return _txn(view, command)
    keys = list(command.values) + list(command.expected) if op in ("update", "cas") \
        else list(command.keys)
    view.read_keys(keys)
    rev = view.revision + 1
    if op == "cas":
        for key, expected in command.expected.items():
            actual = view.data[key][0][1] if key in view.data else 0
            if actual != expected:
                return Outcome(("conflict", key, expected, actual), view.revision)
    if op in ("update", "cas"):
        writes: dict[str, Record | None] = {}
        for key, value in command.values.items():
            old = view.data.get(key)
            writes[key] = (value, rev, old[0][2], old[0][3] + 1) if old else \
                (value, rev, rev, 1)
    elif op == "delete":
        writes = {key: None for key in command.keys if key in view.data}
    else:
        return Outcome(("invalid", f"unknown op {op!r}"), view.revision)
    revision = _commit(view, writes, {})
    return Outcome(("ok", revision, revision), revision, view.changes)


def _txn(view: _View, command: Command) -> Outcome:
    try:
        compares, success, failure = txn_mod.parse(command.txn)
    except ValueError as exc:
        return Outcome(("invalid", str(exc)), view.revision)
    wanted = {lease for ops in (success, failure)
              for lease in txn_mod.leases_of(ops).values() if lease}
    view.read_leases(wanted)
    missing = next((lease for lease in sorted(wanted) if view.lease_docs[lease] is None), 0)
    if missing:
        return Outcome(("no_lease", missing), view.revision)
    view.read_keys([c[0] for c in compares] +
                   [o[1] for o in success + failure if not o[0].endswith("_prefix")])
    for o in success + failure:
        if o[0].endswith("_prefix"):
            view.read_prefix(o[1])
    ok, writes, responses = txn_mod.run(view.records(), compares, success, failure,
                                        view.revision + 1)
    revision = _commit(view, writes, txn_mod.leases_of(success if ok else failure))
    return Outcome(("txn", ok, revision, responses), revision, view.changes)


def _lease(view: _View, command: Command) -> Outcome:
    store, tx, op = view.store, view.tx, command.op
    try:
        if op == "lease_grant":
            ttl = check_ttl(msgpack.unpackb(command.values["ttl"]))
            lease = view.next_lease()
            tx.set(store.lease_ref(lease), {"id": lease, "ttl": ttl, "refreshed": 1,
                                            "keys": []})
            store.costs.write(op)
            return Outcome(("lease", lease, ttl), -1)
        if op == "lease_expire":
            pairs = [(check_id(lease), int(refreshed))
                     for lease, refreshed in msgpack.unpackb(command.values["leases"])]
            view.read_leases(lease for lease, _ in pairs)
            due = [lease for lease, refreshed in pairs if view.lease_docs[lease] is not None
                   and view.lease_docs[lease]["refreshed"] == refreshed]
        else:
            lease = check_id(command.expected["lease"])
            view.read_leases([lease])
            doc = view.lease_docs[lease]
            if op == "lease_keepalive":
                if doc is None:
                    return Outcome(("lease", 0, 0.0), -1)
                tx.update(store.lease_ref(lease), {"refreshed": doc["refreshed"] + 1})
                store.costs.write(op)
                return Outcome(("lease", lease, float(doc["ttl"])), -1)
            due = [lease] if doc is not None else []
    except (KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
        return Outcome(("invalid", f"malformed {op} command: {exc!r}"), view.revision)
    doomed = sorted({key for lease in due for key in view.lease_docs[lease]["keys"]})
    view.read_keys(doomed)
    for lease in due:
        view.lease_docs[lease] = None       # ended: _commit must not rewrite its key list
    revision = _commit(view, {key: None for key in doomed if key in view.data}, {},
                       ended=due)
    return Outcome(("lease_end", due, revision), revision, view.changes)


def _commit(view: _View, writes: dict[str, Record | None], leases: dict[str, int], *,
            ended: Iterable[int] = ()) -> int:
    """Write ``writes`` (None = delete) at the next revision; returns the revision now.

    Puts attach their key to ``leases[key]`` (detached when absent), deletes detach; the
    key lists of the lease documents involved follow. Nothing changed: no revision.
    """
    store, tx, op = view.store, view.tx, view.op
    view.changes = []
    rev = view.revision + 1               # every read precedes the first write
    if writes:
        old_leases = {key: view.data[key][1] for key in writes if key in view.data}
        view.read_leases(list(old_leases.values()) + list(leases.values()))
    for lease in ended:
        tx.delete(store.lease_ref(lease))
        store.costs.write(op)
    if not writes:
        return view.revision
    lease_keys = {lease: set(doc["keys"]) for lease, doc in view.lease_docs.items()
                  if doc is not None}
    touched: set[int] = set()
    entries = []
    for key, record in writes.items():
        old = view.data.get(key)
        new_lease = leases.get(key, 0) if record is not None else 0
        if old is not None and old[1] in lease_keys:
            lease_keys[old[1]].discard(key)
            touched.add(old[1])
        if record is not None:
            if new_lease:
                lease_keys[new_lease].add(key)
                touched.add(new_lease)
            tx.set(store.state_ref(key), state_fields(key, record, new_lease))
            change = Change("put", key, rev, record[0], record[2], record[3],
                            old[0][0] if old is not None else None)
        else:
            tx.delete(store.state_ref(key))
            change = Change("delete", key, rev, None, 0, 0, old[0][0] if old else None)
        view.changes.append(change)
        entries.append({"t": change.type, "k": key, "v": change.value,
                        "c": change.create_revision, "n": change.version, "p": change.prev,
                        "l": new_lease})
    for lease in touched:
        tx.update(store.lease_ref(lease), {"keys": sorted(lease_keys[lease])})
    tx.set(store.revision_ref, {"revision": rev})
    tx.set(store.change_ref(rev), {"revision": rev, "changes": entries})
    store.costs.write(op, len(writes) + len(touched) + 2)
    return rev
