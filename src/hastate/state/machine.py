"""The replicated state machine: a dict of top-level keys with per-key revisions.

Apply is deterministic: it depends only on the command and the log index, never on
clocks, randomness or I/O, so every replica computes the same state. Values are kept
msgpack-encoded, so a read decodes a fresh copy and the state can be dumped as is.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Iterable

from pysyncobj import SyncObjConsumer, replicated

from hastate.state.codec import Command, decode_value

logger = logging.getLogger(__name__)

#: How many recent sequence numbers each client's dedup window remembers.
DEDUP_WINDOW = 1024
#: How many clients the dedup table keeps (least recently applied evicted first).
DEDUP_CLIENTS = 4096

Result = tuple  # ("ok", index) | ("conflict", key, expected, actual) | ("expired",)
# listener(index, previous command's index, command, result)
ApplyListener = Callable[[int, int, Command, Result], None]


class ReplicatedState(SyncObjConsumer):
    """Owns the replicated dict; mutated only through :meth:`apply` on the Raft thread."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._data: dict[str, tuple[bytes, int]] = {}
        self._applied_index = 0
        # client id -> (highest seq applied, {seq: result}) for exactly-once retries.
        self._sessions: OrderedDict[bytes, tuple[int, dict[int, Result]]] = OrderedDict()
        self._listeners: list[ApplyListener] = []

    # -- replicated --------------------------------------------------------------------
    @replicated
    def apply(self, raw: bytes) -> Result:
        """Apply one encoded :class:`Command` at the next log index; return its result."""
        return self.apply_at(self._syncObj.raftLastApplied + 1, raw)

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
        for seq in [s for s in results if s <= highest - DEDUP_WINDOW]:
            del results[seq]
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
        return digest.hexdigest()

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
                           [(c, h, dict(r)) for c, (h, r) in self._sessions.items()])

    def to_body(self) -> dict[str, Any]:
        """The state as plain msgpack types, for dumps and snapshots."""
        return self.capture().body()

    def load_body(self, body: dict[str, Any]) -> None:
        """Replace the whole state with ``body`` (from :meth:`to_body`)."""
        with self._lock:
            self._data = {k: (v, rev) for k, (v, rev) in body["data"].items()}
            self._applied_index = body["applied_index"]
            self._sessions = OrderedDict(
                (c, (h, {seq: tuple(res) for seq, res in r})) for c, h, r in body["sessions"])


class Capture:
    """A copy of the state at ``applied_index``, taken by :meth:`ReplicatedState.capture`."""

    def __init__(self, data: dict[str, tuple[bytes, int]], applied_index: int,
                 sessions: list[tuple[bytes, int, dict[int, Result]]]) -> None:
        self.data = data
        self.applied_index = applied_index
        self.sessions = sessions

    def __len__(self) -> int:
        return len(self.data)

    def body(self) -> dict[str, Any]:
        """Plain msgpack types: {"data", "applied_index", "sessions"}."""
        return {
            "data": {k: [v, rev] for k, (v, rev) in self.data.items()},
            "applied_index": self.applied_index,
            "sessions": [[c, h, list(r.items())] for c, h, r in self.sessions],
        }
