"""The replicated state machine: a dict of top-level keys with etcd-style revisions.

Length: one deterministic apply path over the dict, its revisions, dedup sessions, the lease
and legacy lock tables, and the consistent copies dumps and exports take of them; split, the
pieces would share the one lock and the one revision counter through each other's privates.

Apply is deterministic: it depends only on the command and the log index, never on
clocks, randomness or I/O, so every replica computes the same state. Values are kept
msgpack-encoded, so a read decodes a fresh copy and the state can be dumped as is.

Revisions (as etcd v3 defines them): the cluster ``revision`` counts applied mutating writes
with no gap (one per write or transaction that changed something; barriers, lock commands,
failed compares and deletes of absent keys leave it alone). Each key records
``mod_revision`` (its last change), ``create_revision`` (when it was last created) and
``version`` (changes since creation; a delete resets all three). Each mutating write hands
its changes to the change listeners (the watch hub).

Upgrade from the format without revisions: a state body whose keys carry one number (the
log index of their last change) loads with mod_revision = create_revision = that index,
version 1, and the cluster revision = the body's applied index; a command in the old
envelope (format 1, replayed from an old log) sets the revision to its log index, as
revisions were log indexes then. Every replica derives the same numbers from the same log.

Each key's record is kept packed in one bytes object (:mod:`hastate.state.record`), shared
with the watch history; dumps and :meth:`ReplicatedState.records` give the
``(value, mod_revision, create_revision, version)`` tuples.

Beside the dict, a lock table (name -> owner, fencing token, expires_at) holds the locks of
older versions, whose lock recipe proposed lock commands carrying the proposer's clock
reading (``now``; a grant's token was its log index). Nothing proposes them any more (the
lock recipe runs on leases and transactions), but they still apply exactly as before, and
dumps keep carrying the table, so older journals and snapshots replay identically.

A lease table (:mod:`hastate.state.leases`) holds leases and the keys attached to them; a
revoke or expire deletes the attached keys at one revision, like any mutating write. The
state also counts the leases ended by expiry (``lease_expiries``): counted once, when the
expire applies (a deduplicated retry counts nothing), carried by dumps, so every caught-up
replica reports the same cluster-wide number, across restarts too.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Iterable, Protocol, Sequence

import msgpack

from hastate.state import record as rec
from hastate.state import txn as txn_mod
from hastate.state.codec import BATCH_OP, Command, decode_value
from hastate.state.dump import UnpackedView
from hastate.state.export import StateExport
from hastate.state.history import Change, PackedChanges
from hastate.state.leases import LeaseInfo, LeaseTable
from hastate.state.record import Record

logger = logging.getLogger(__name__)

#: How many recent sequence numbers each client's dedup window remembers.
DEDUP_WINDOW = 1024
#: How many clients the dedup table keeps (least recently applied evicted first).
DEDUP_CLIENTS = 4096
#: Clock assumption of the older versions' lock table: the wall clocks of the processes that
#: took locks agree within this many seconds. A lock held by another owner may be taken over
#: only by a command whose ``now`` is at least ``expires_at + LOCK_MAX_SKEW`` (expires_at is
#: on the holder's clock). A constant, not a setting: every replica must decide alike.
LOCK_MAX_SKEW = 1.0

Result = tuple  # ("ok", revision, index) | ("conflict", key, expected, actual) | ("expired",)
#                 | ("txn", succeeded, revision, responses) | ("purged", [names])
#                 | ("lock", granted, token, owner, expires_at) | ("invalid", reason)
#                 | ("lease", id, ttl) | ("lease_end", [ids], revision) | ("no_lease", id)
#                 | ("batch", [one result per member command])
# Bodies written before revisions hold ("ok", index) results in their dedup table.
# listener(index, previous command's index, command, result)
ApplyListener = Callable[[int, int, Command, Result], None]


class ChangeListener(Protocol):
    """Receives every mutating write's changes, in revision order, on the apply thread."""

    def changed(self, revision: int, changes: Sequence[Change]) -> None:
        """``changes`` were applied at ``revision``; must not block."""

    def reset(self, revision: int, history: Sequence[tuple[int, Sequence[Change]]]) -> None:
        """The whole state was replaced by one at ``revision`` (a dump was loaded), whose
        ``history`` holds the changes of its last revisions (oldest first; may be empty)."""

    def export(self) -> list[tuple[int, Sequence[Change]]]:
        """The recent changes to keep in a dump (apply thread; references, no copies)."""


class ReplicatedState:
    """Owns the replicated dict; mutated only through :meth:`apply_at` on the Raft thread."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[str, bytes] = {}   # key -> packed record (state/record.py)
        self._applied_index = 0
        self._revision = 0
        # client id -> (highest seq applied, {seq: result}) for exactly-once retries.
        self._sessions: OrderedDict[bytes, tuple[int, dict[int, Result]]] = OrderedDict()
        # lock name -> (owner, fencing token = log index of the grant, expires_at).
        self._locks: dict[str, tuple[str, int, float]] = {}
        self._leases = LeaseTable()
        self._lease_expiries = 0
        self._listeners: list[ApplyListener] = []
        self._change_listeners: list[ChangeListener] = []

    # -- replicated (consensus/consumer.py calls this for each committed entry) -------------
    def apply_at(self, index: int, raw: bytes) -> Result:
        """Apply an encoded command at log ``index`` (Raft thread, or restore's replay).

        A batch (``Command.batch``) applies its members in order at ``index``, each as if it
        were alone (own dedup, revision, changes); its result is ``("batch", [results])``.
        Apply listeners hear of the entry once, with the batch command and that result
        (:func:`applied_commands` lists the members with their results).
        """
        command = Command.decode(raw)
        with self._lock:
            previous = self._applied_index
        if command.op == BATCH_OP:
            result: Result = ("batch", [self._apply_one(index, member)
                                        for member in command.batch])
        else:
            result = self._apply_one(index, command)
        for listener in self._listeners:
            try:
                listener(index, previous, command, result)
            except Exception:  # a listener must never break apply
                logger.exception("apply listener failed", extra={"index": index})
        return result

    def _apply_one(self, index: int, command: Command) -> Result:
        """Apply one (non-batch) command at ``index`` and tell the change listeners."""
        changes: list[Any] = []   # flat: key, new packed record or None, old one or None
        with self._lock:
            result = self._dedup_lookup(command)
            if result is None:
                revision = index if command.legacy else self._revision + 1
                result = self._execute(command, index, revision, changes)
                if changes or command.legacy:
                    self._revision = revision
                self._remember(command, result)
            elif command.legacy:
                self._revision = index
            self._applied_index = index
            revision = self._revision
        if changes:
            packed = PackedChanges.of(revision, changes)
            for sink in self._change_listeners:
                try:
                    sink.changed(revision, packed)
                except Exception:  # a listener must never break apply
                    logger.exception("change listener failed", extra={"revision": revision})
        return result

    # -- pure helpers (deterministic) ---------------------------------------------------
    def _execute(self, command: Command, index: int, revision: int,
                 changes: list[Any]) -> Result:
        """Run ``command``; a mutation appends its changes (all at ``revision``)."""
        if command.op in Command.LOCK_OPS:
            return self._execute_lock(command, index)
        if command.op in Command.LEASE_OPS:
            result, doomed = self._leases.execute(command, index)
            if command.op == "lease_expire" and result[0] == "lease_end":
                self._lease_expiries += len(result[1])
            self._write({key: None for key in doomed}, revision, changes)
            if result[0] == "lease_end":
                result = ("lease_end", result[1], revision if changes else self._revision)
            return result
        if command.op == "txn":
            return self._execute_txn(command, revision, changes)
        if command.op == "cas":
            for key, expected in command.expected.items():
                actual = rec.mod_revision(self._data[key]) if key in self._data else 0
                if actual != expected:
                    return ("conflict", key, expected, actual)
        if command.op in ("update", "cas"):
            self._write({key: _put(self._data.get(key), value, revision)
                         for key, value in command.values.items()}, revision, changes)
        elif command.op == "delete":
            self._write({key: None for key in command.keys if key in self._data}, revision,
                        changes)
        return ("ok", revision if changes or command.legacy else self._revision, index)

    def _execute_txn(self, command: Command, revision: int, changes: list[Any]) -> Result:
        try:
            compares, success, failure = txn_mod.parse(command.txn)
        except ValueError as exc:
            return ("invalid", str(exc))
        missing = self._leases.missing(
            lease for ops in (success, failure) for lease in txn_mod.leases_of(ops).values())
        if missing:
            return ("no_lease", missing)
        ok, writes, responses = txn_mod.run(rec.RecordView(self._data), compares, success, failure,
                                            revision)
        self._write({k: rec.pack(*r) if r is not None else None for k, r in writes.items()},
                    revision, changes, txn_mod.leases_of(success if ok else failure))
        return ("txn", ok, revision if changes or command.legacy else self._revision,
                responses)

    def _write(self, writes: dict[str, bytes | None], revision: int,
               changes: list[Any], leases: dict[str, int] | None = None) -> None:
        """Apply new packed records (None = delete); append each real change to ``changes``
        as key, new record, old record (the layout of :class:`PackedChanges`).

        A put attaches its key to ``leases[key]`` (detaches it when absent); a delete detaches.
        """
        data = self._data
        bind = self._leases.bind
        for key, packed in writes.items():
            old = data.get(key)
            bind(key, leases.get(key, 0) if leases and packed is not None else 0)
            if packed is not None:
                data[key] = packed
                changes += (key, packed, old)
            elif old is not None:
                del data[key]
                changes += (key, None, old)

    def _execute_lock(self, command: Command, index: int) -> Result:
        """Lock table transitions; time comes only from the command's ``now``.

        Returns ("lock", granted, token, owner, expires_at): after a successful acquire or
        renew the grant; after a refused one the current holder; after a release the entry
        it freed (or, when nothing was freed, the current holder). No entry: (0, "", 0.0).
        A malformed command returns ("invalid", reason) and changes nothing.
        """
        if command.op == "lock_purge":
            return self._purge_locks(command)
        try:
            name, owner, ttl, now, token = command.lock_args()
        except ValueError as exc:
            return ("invalid", str(exc))
        held = self._locks.get(name)
        if command.op == "lock_acquire":
            if held is None or (held[0] != owner and now >= held[2] + LOCK_MAX_SKEW):
                held = self._locks[name] = (owner, index, now + ttl)   # new grant, new token
            elif held[0] == owner:                                   # held by the caller:
                held = self._locks[name] = (owner, held[1], max(held[2], now + ttl))  # renew
            else:
                return _lock_result(False, held)
            return _lock_result(True, held)
        # renew needs the exact grant; release with token 0 frees whatever the owner holds.
        if held is None or held[0] != owner or (held[1] != token and
                                                (token or command.op == "lock_renew")):
            return _lock_result(False, held)
        if command.op == "lock_renew":
            held = self._locks[name] = (owner, held[1], max(held[2], now + ttl))
            return _lock_result(True, held)
        del self._locks[name]                                         # lock_release
        return _lock_result(True, held)

    def _purge_locks(self, command: Command) -> Result:
        """Drop the entries another owner could take over at the command's ``now``."""
        try:
            now = msgpack.unpackb(command.values["now"])
            if not isinstance(now, float) or not -float("inf") < now < float("inf"):
                raise ValueError(now)
        except (KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
            return ("invalid", f"malformed lock_purge command: {exc!r}")
        expired = sorted(name for name, (_, _, expires_at) in self._locks.items()
                         if now >= expires_at + LOCK_MAX_SKEW)
        for name in expired:
            del self._locks[name]
        return ("purged", expired)

    def _dedup_lookup(self, command: Command) -> Result | None:
        if not command.client:
            return None
        session = self._sessions.get(command.client)
        if session is None:
            return None
        highest, results = session
        if command.seq in results:
            return results[command.seq]
        if command.seq <= highest - DEDUP_WINDOW:
            return ("expired",)
        return None

    def _remember(self, command: Command, result: Result) -> None:
        if not command.client:
            return
        highest, results = self._sessions.pop(command.client, (0, {}))
        results[command.seq] = result
        highest = max(highest, command.seq)
        # Constant time per apply: results are in (mostly ascending) insertion order, so the
        # oldest sit at the front; a late straggler just waits there until its turn.
        while results and next(iter(results)) <= highest - DEDUP_WINDOW:
            del results[next(iter(results))]
        self._sessions[command.client] = (highest, results)
        while len(self._sessions) > DEDUP_CLIENTS:
            self._sessions.popitem(last=False)

    # -- reads ----------------------------------------------------------------------------
    @property
    def applied_index(self) -> int:
        """Log index of the last command this replica applied."""
        return self._applied_index

    @property
    def revision(self) -> int:
        """The cluster revision: how many mutating writes this replica applied."""
        return self._revision

    def snapshot(self, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """Decoded copy of the state (or of ``keys`` only)."""
        return self.snapshot_at(keys)[0]

    def snapshot_at(self, keys: Iterable[str] | None = None) -> tuple[dict[str, Any], int]:
        """Decoded copy of the state (or of ``keys``) and the revision it is at."""
        with self._lock:
            items = list(self._data.items()) if keys is None else \
                [(k, self._data[k]) for k in keys if k in self._data]
            revision = self._revision
        return {k: decode_value(rec.value(packed)) for k, packed in items}, revision

    def revisions(self) -> dict[str, int]:
        """mod_revision of every key (the revision of its last change; for compare_and_set)."""
        with self._lock:
            return {k: rec.mod_revision(packed) for k, packed in self._data.items()}

    def records(self, keys: Iterable[str]) -> dict[str, Record]:
        """(encoded value, mod_revision, create_revision, version) of those ``keys`` present."""
        with self._lock:
            return {k: rec.unpack(self._data[k]) for k in keys if k in self._data}

    def scan(self, prefix: str) -> tuple[list[tuple[str, Record]], int]:
        """(key, current record) of the keys starting with ``prefix`` that existed at the
        returned revision (those deleted since are left out).

        For building derived indexes, not for the read path: apply waits only while the
        key list is copied, the matching runs outside the lock.
        """
        with self._lock:
            keys, revision = list(self._data), self._revision
        matched = [k for k in keys if k.startswith(prefix)]
        with self._lock:
            packed = [(k, self._data[k]) for k in matched if k in self._data]
        return [(k, rec.unpack(p)) for k, p in packed], revision

    def state_hash(self) -> str:
        """SHA-256 over the sorted encoded state: equal on replicas with equal state."""
        digest = hashlib.sha256()
        with self._lock:
            for key in sorted(self._data):
                value, mod, create, version = rec.unpack(self._data[key])
                digest.update(key.encode())
                for number in (mod, create, version):
                    digest.update(number.to_bytes(8, "big"))
                digest.update(value)
            digest.update(b"\x00revision" + self._revision.to_bytes(8, "big"))
            if self._locks:   # absent locks leave the hash as it was before the lock table
                digest.update(b"\x00locks")
                digest.update(msgpack.packb(sorted([n, *e] for n, e in self._locks.items())))
            if len(self._leases):   # likewise for the lease table
                digest.update(b"\x00leases")
                digest.update(msgpack.packb(self._leases.to_body()))
            if self._lease_expiries:   # and for the expiry count
                digest.update(b"\x00lease_expiries" + self._lease_expiries.to_bytes(8, "big"))
        return digest.hexdigest()

    def locks(self) -> dict[str, tuple[str, int, float]]:
        """The older versions' lock table: name -> (owner, fencing token, expires_at on the
        owner's wall clock), as replayed from their lock commands (empty on a cluster that
        never ran them)."""
        with self._lock:
            return dict(self._locks)

    def leases(self) -> dict[int, LeaseInfo]:
        """The lease table: id -> :class:`~hastate.state.leases.LeaseInfo` (a copy)."""
        with self._lock:
            return self._leases.view()

    def has_lease(self, lease: int) -> bool:
        """True while lease ``lease`` is in the table (granted, not ended)."""
        with self._lock:
            return lease in self._leases

    def lease_count(self) -> int:
        """How many leases the table holds."""
        return len(self._leases)

    @property
    def lease_expiries(self) -> int:
        """Leases ended by expiry in the cluster's history (the same on caught-up replicas)."""
        return self._lease_expiries

    def lease_of(self, key: str) -> int:
        """The id of the lease ``key`` is attached to (0: none)."""
        with self._lock:
            return self._leases.lease_of(key)

    def __len__(self) -> int:
        return len(self._data)

    # -- listeners ------------------------------------------------------------------------
    def add_listener(self, listener: ApplyListener) -> None:
        """Call ``listener(index, previous, command, result)`` on the Raft thread after each apply.

        ``previous`` is the index of the command applied before this one, so a consumer can
        tell a gap (commands it never saw) from indexes that held no command (Raft no-ops).
        A batch entry is one call (its command and ``("batch", [results])``); listeners that
        look at individual commands iterate :func:`applied_commands`.
        """
        self._listeners.append(listener)

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Feed ``listener`` every mutating write's changes and every state replacement."""
        self._change_listeners.append(listener)

    # -- dump -----------------------------------------------------------------------------
    def capture(self) -> "Capture":
        """A consistent point-in-time copy, cheap enough for the Raft thread.

        Values are immutable bytes, so a shallow copy of the dict suffices; encoding the
        copy (:meth:`Capture.body`) can then run on another thread without blocking apply.
        """
        with self._lock:
            history = self._change_listeners[0].export() if self._change_listeners else []
            return Capture(dict(self._data), self._applied_index,
                           [(c, h, dict(r)) for c, (h, r) in self._sessions.items()],
                           locks=dict(self._locks), revision=self._revision,
                           history=history, leases=self._leases.to_body(),
                           lease_expiries=self._lease_expiries)

    def export(self) -> StateExport:
        """Every key and lease at this replica's revision (an engine's DR export)."""
        capture = self.capture()
        return StateExport(capture.revision, rec.RecordView(capture.data),
                           {lease: (ttl, frozenset(keys))
                            for lease, ttl, _refreshed, keys in capture.leases})

    def to_body(self) -> dict[str, Any]:
        """The state as plain msgpack types, for dumps and snapshots."""
        return self.capture().body()

    def load_body(self, body: dict[str, Any]) -> None:
        """Replace the whole state with ``body`` (from :meth:`to_body`).

        Bodies written before the lock table existed (no "locks") load with no locks, and
        likewise for the lease table (no "leases": no leases, no expiries counted); bodies
        written before revisions (a key holds [value, log index], no "revision") load as the
        module docstring says. Change listeners are told the state was replaced and get the
        body's watch history (none in older bodies).
        """
        with self._lock:
            self._data = {k: rec.pack(*_record(entry)) for k, entry in body["data"].items()}
            self._applied_index = body["applied_index"]
            self._revision = body.get("revision", self._applied_index)
            self._sessions = OrderedDict(
                (c, (h, {seq: tuple(res) for seq, res in r})) for c, h, r in body["sessions"])
            self._locks = {name: (owner, token, expires_at) for name, (owner, token, expires_at)
                           in body.get("locks", {}).items()}
            self._leases.load_body(body.get("leases", []))
            self._lease_expiries = body.get("lease_expiries", 0)
            revision = self._revision
        history = [(rev, tuple(Change(*c) for c in changes))
                   for rev, changes in body.get("history", [])]
        for sink in self._change_listeners:
            sink.reset(revision, history)


def applied_commands(command: Command, result: Result) -> list[tuple[Command, Result]]:
    """The (command, result) pairs an apply listener's call stands for: a batch's members
    with their own results, else the command itself."""
    if command.op == BATCH_OP:
        return list(zip(command.batch, result[1]))
    return [(command, result)]


def _put(old: bytes | None, value: bytes, revision: int) -> bytes:
    """The packed record of a key set to ``value`` at ``revision`` (``old``: before)."""
    if old is None:
        return rec.pack(value, revision, revision, 1)
    _, create, version = rec.revisions(old)
    return rec.pack(value, revision, create, version + 1)


def _record(entry: Sequence[Any]) -> Record:
    """A body's key entry as a record; [value, log index] is the format before revisions."""
    if len(entry) == 2:
        value, index = entry
        return (value, index, index, 1)
    value, mod, create, version = entry
    return (value, mod, create, version)


def _lock_result(granted: bool, held: tuple[str, int, float] | None) -> Result:
    owner, token, expires_at = held if held is not None else ("", 0, 0.0)
    return ("lock", granted, token, owner, expires_at)


class Capture:
    """A copy of the state at ``applied_index``, taken by :meth:`ReplicatedState.capture`."""

    def __init__(self, data: dict[str, bytes], applied_index: int,
                 sessions: list[tuple[bytes, int, dict[int, Result]]], *,
                 locks: dict[str, tuple[str, int, float]] | None = None,
                 revision: int = 0,
                 history: list[tuple[int, Sequence[Change]]] | None = None,
                 leases: list[list[Any]] | None = None, lease_expiries: int = 0) -> None:
        self.data = data
        self.applied_index = applied_index
        self.revision = revision
        self.history = history if history is not None else []
        self.sessions = sessions
        self.locks = locks if locks is not None else {}
        self.leases = leases if leases is not None else []
        self.lease_expiries = lease_expiries

    def __len__(self) -> int:
        return len(self.data)

    def body(self, *, lazy: bool = False) -> dict[str, Any]:
        """Plain msgpack types: {"data", "applied_index", "revision", "sessions", "locks",
        "leases", "lease_expiries", "history"} (history: [[revision, [[type, key, value,
        create_revision, version, prev], ...]], ...], the watch history's last revisions, so
        a restarted node can serve watchers that resume before its dump).

        ``data`` maps each key to a (value, mod_revision, create_revision, version) tuple
        unpacked from this capture's packed records (msgpack packs tuples as arrays). With
        ``lazy``, ``data`` is an :class:`~hastate.state.dump.UnpackedView` of the packed
        records instead: :func:`~hastate.state.dump.encode_dump` unpacks a chunk at a time,
        so dumps and snapshots of a million keys never hold a million tuples.
        """
        return {
            "data": UnpackedView(self.data, rec.unpack) if lazy else
            {k: rec.unpack(packed) for k, packed in self.data.items()},
            "applied_index": self.applied_index,
            "revision": self.revision,
            "sessions": [[c, h, list(r.items())] for c, h, r in self.sessions],
            "locks": {name: list(entry) for name, entry in self.locks.items()},
            "leases": self.leases,
            "lease_expiries": self.lease_expiries,
            "history": [[rev, [[c.type, c.key, c.revision, c.value, c.create_revision,
                                c.version, c.prev] for c in changes]]
                        for rev, changes in self.history],
        }
