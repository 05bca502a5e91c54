"""The replicated state machine: a dict of top-level keys with per-key revisions.

Apply is deterministic: it depends only on the command and the log index, never on
clocks, randomness or I/O, so every replica computes the same state. Values are kept
msgpack-encoded, so a read decodes a fresh copy and the state can be dumped as is.

Beside the dict, a lock table (name -> owner, fencing token, expires_at) serves
:mod:`hastate.recipes.lock`: lock commands carry the proposer's clock reading (``now``),
and a grant's fencing token is the log index it was applied at.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Iterable

import msgpack

from hastate.state.codec import Command, decode_value

logger = logging.getLogger(__name__)

#: How many recent sequence numbers each client's dedup window remembers.
DEDUP_WINDOW = 1024
#: How many clients the dedup table keeps (least recently applied evicted first).
DEDUP_CLIENTS = 4096
#: Clock assumption of the lock table: the wall clocks of the processes that take locks
#: agree within this many seconds. A lock held by another owner may be taken over only by a
#: command whose ``now`` is at least ``expires_at + LOCK_MAX_SKEW`` (expires_at is on the
#: holder's clock). A constant, not a setting: every replica must decide alike.
LOCK_MAX_SKEW = 1.0

Result = tuple  # ("ok", index) | ("conflict", key, expected, actual) | ("expired",)
#                 | ("lock", granted, token, owner, expires_at) | ("invalid", reason)
# listener(index, previous command's index, command, result)
ApplyListener = Callable[[int, int, Command, Result], None]


class ReplicatedState:
    """Owns the replicated dict; mutated only through :meth:`apply_at` on the Raft thread."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[str, tuple[bytes, int]] = {}
        self._applied_index = 0
        # client id -> (highest seq applied, {seq: result}) for exactly-once retries.
        self._sessions: OrderedDict[bytes, tuple[int, dict[int, Result]]] = OrderedDict()
        # lock name -> (owner, fencing token = log index of the grant, expires_at).
        self._locks: dict[str, tuple[str, int, float]] = {}
        self._listeners: list[ApplyListener] = []

    # -- replicated (consensus/consumer.py calls this for each committed entry) -------------
    def apply_at(self, index: int, raw: bytes) -> Result:
        """Apply an encoded command at log ``index`` (Raft thread, or restore's replay)."""
        command = Command.decode(raw)
        with self._lock:
            previous = self._applied_index
            result = self._dedup_lookup(command)
            if result is None:
                result = self._execute(command, index)
                self._remember(command, result)
            self._applied_index = index
        for listener in self._listeners:
            try:
                listener(index, previous, command, result)
            except Exception:  # a listener must never break apply
                logger.exception("apply listener failed", extra={"index": index})
        return result

    # -- pure helpers (deterministic) ---------------------------------------------------
    def _execute(self, command: Command, index: int) -> Result:
        if command.op in Command.LOCK_OPS:
            return self._execute_lock(command, index)
        if command.op == "cas":
            for key, expected in command.expected.items():
                actual = self._data[key][1] if key in self._data else 0
                if actual != expected:
                    return ("conflict", key, expected, actual)
        if command.op in ("update", "cas"):
            for key, value in command.values.items():
                self._data[key] = (value, index)
        elif command.op == "delete":
            for key in command.keys:
                self._data.pop(key, None)
        return ("ok", index)

    def _execute_lock(self, command: Command, index: int) -> Result:
        """Lock table transitions; time comes only from the command's ``now``.

        Returns ("lock", granted, token, owner, expires_at): after a successful acquire or
        renew the grant; after a refused one the current holder; after a release the entry
        it freed (or, when nothing was freed, the current holder). No entry: (0, "", 0.0).
        A malformed command returns ("invalid", reason) and changes nothing.
        """
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

    def snapshot(self, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """Decoded copy of the state (or of ``keys`` only)."""
        with self._lock:
            items = list(self._data.items()) if keys is None else \
                [(k, self._data[k]) for k in keys if k in self._data]
        return {k: decode_value(v) for k, (v, _) in items}

    def revisions(self) -> dict[str, int]:
        """Log index of the last change of every key."""
        with self._lock:
            return {k: rev for k, (_, rev) in self._data.items()}

    def state_hash(self) -> str:
        """SHA-256 over the sorted encoded state: equal on replicas with equal state."""
        digest = hashlib.sha256()
        with self._lock:
            for key in sorted(self._data):
                value, rev = self._data[key]
                digest.update(key.encode())
                digest.update(rev.to_bytes(8, "big"))
                digest.update(value)
            if self._locks:   # absent locks leave the hash as it was before the lock table
                digest.update(b"\x00locks")
                digest.update(msgpack.packb(sorted([n, *e] for n, e in self._locks.items())))
        return digest.hexdigest()

    def locks(self) -> dict[str, tuple[str, int, float]]:
        """The lock table: name -> (owner, fencing token, expires_at on the owner's clock).

        Entries stay until released or taken over (apply reads no clock, so nothing
        expires them); compare ``expires_at`` with your clock to tell a lapsed one.
        """
        with self._lock:
            return dict(self._locks)

    def __len__(self) -> int:
        return len(self._data)

    # -- listeners ------------------------------------------------------------------------
    def add_listener(self, listener: ApplyListener) -> None:
        """Call ``listener(index, previous, command, result)`` on the Raft thread after each apply.

        ``previous`` is the index of the command applied before this one, so a consumer can
        tell a gap (commands it never saw) from indexes that held no command (Raft no-ops).
        """
        self._listeners.append(listener)

    # -- dump -----------------------------------------------------------------------------
    def capture(self) -> "Capture":
        """A consistent point-in-time copy, cheap enough for the Raft thread.

        Values are immutable bytes, so a shallow copy of the dict suffices; encoding the
        copy (:meth:`Capture.body`) can then run on another thread without blocking apply.
        """
        with self._lock:
            return Capture(dict(self._data), self._applied_index,
                           [(c, h, dict(r)) for c, (h, r) in self._sessions.items()],
                           locks=dict(self._locks))

    def to_body(self) -> dict[str, Any]:
        """The state as plain msgpack types, for dumps and snapshots."""
        return self.capture().body()

    def load_body(self, body: dict[str, Any]) -> None:
        """Replace the whole state with ``body`` (from :meth:`to_body`).

        Bodies written before the lock table existed (no "locks") load with no locks.
        """
        with self._lock:
            self._data = {k: (v, rev) for k, (v, rev) in body["data"].items()}
            self._applied_index = body["applied_index"]
            self._sessions = OrderedDict(
                (c, (h, {seq: tuple(res) for seq, res in r})) for c, h, r in body["sessions"])
            self._locks = {name: (owner, token, expires_at) for name, (owner, token, expires_at)
                           in body.get("locks", {}).items()}


def _lock_result(granted: bool, held: tuple[str, int, float] | None) -> Result:
    owner, token, expires_at = held if held is not None else ("", 0, 0.0)
    return ("lock", granted, token, owner, expires_at)


class Capture:
    """A copy of the state at ``applied_index``, taken by :meth:`ReplicatedState.capture`."""

    def __init__(self, data: dict[str, tuple[bytes, int]], applied_index: int,
                 sessions: list[tuple[bytes, int, dict[int, Result]]], *,
                 locks: dict[str, tuple[str, int, float]] | None = None) -> None:
        self.data = data
        self.applied_index = applied_index
        self.sessions = sessions
        self.locks = locks if locks is not None else {}

    def __len__(self) -> int:
        return len(self.data)

    def body(self) -> dict[str, Any]:
        """Plain msgpack types: {"data", "applied_index", "sessions", "locks"}.

        ``data`` is this capture's own dict of (value, revision) tuples, not a copy: msgpack
        packs tuples as arrays, and a million fresh lists would only feed the garbage
        collector (a full collection holds the GIL, stalling the Raft thread).
        """
        return {
            "data": self.data,
            "applied_index": self.applied_index,
            "sessions": [[c, h, list(r.items())] for c, h, r in self.sessions],
            "locks": {name: list(entry) for name, entry in self.locks.items()},
        }
