"""A :class:`~hastate.events.backend.Backend` on a bare state machine, for fast tests.

Applies every transaction to a real :class:`~hastate.state.machine.ReplicatedState` with a
real :class:`~hastate.state.watch.WatchHub` (the code every replica runs), without Raft,
so property tests can run thousands of appends a second.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Sequence

from hastate.events.index import EventIndex
from hastate.state import txn as txn_mod
from hastate.state.codec import Command, decode_value
from hastate.state.machine import ReplicatedState
from hastate.state.txn import Compare, Op, TxnResult
from hastate.state.watch import Watcher, WatchHub


class MachineBackend:
    """Event-stream backend applying commands straight to one in-process replica."""

    def __init__(self, read_delay: float = 0.0) -> None:
        """``read_delay``: seconds each read takes (a network round trip), so concurrent
        writers' reads and transactions interleave and their compares fail."""
        self.read_delay = read_delay
        self.machine = ReplicatedState()
        self.hub = WatchHub()
        self.machine.add_change_listener(self.hub)
        self.index = EventIndex(self.machine.scan, self.machine.revision)
        self.machine.add_change_listener(self.index)
        self._log_index = itertools.count(1)
        self._lock = threading.Lock()
        self.transactions = 0

    def read(self, keys: Sequence[str], *, linearizable: bool) -> dict[str, Any]:
        values = self.machine.snapshot_at(keys)[0]
        if self.read_delay:
            time.sleep(self.read_delay)
        return values

    def records(self, keys: Sequence[str]) -> dict[str, tuple[Any, int]]:
        return {k: (decode_value(r[0]), r[2]) for k, r in self.machine.records(keys).items()}

    def transaction(self, compare: list[Compare], success: list[Op],
                    failure: list[Op]) -> TxnResult:
        wire = txn_mod.build(compare, success, failure,
                             max_ops=max(len(compare), len(success), len(failure), 1))
        with self._lock:
            index = next(self._log_index)
            self.transactions += 1
            raw = Command(op="txn", client=b"test", seq=index, txn=wire).encode()
            result = self.machine.apply_at(index, raw)
        return txn_mod.to_result(result, success, failure)

    def watch(self, prefix: str, start_revision: int) -> Watcher:
        return self.hub.watch(prefix, start_revision)

    def close(self) -> None:
        self.hub.close()
