"""What event streams need from hastate, and optimistic commits built on transactions.

:class:`ManagerBackend` adapts a :class:`~hastate.StateManager` (reads, transactions
without the per-branch op limit, watch); tests use the same protocol on a bare state
machine. :func:`commit` is the optimistic-concurrency loop every append and tracking write
goes through: read some keys, decide what to write, and commit it as ONE transaction whose
compares say "each key read still has the value the decision saw". A failed compare
returns the current values in the same round trip (the failure branch gets them), so the
retry needs no extra read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generic, Protocol, Sequence, TypeVar

from hastate.errors import AppendContentionError, WriteError
from hastate.events.index import EventIndex
from hastate.state import txn as txn_mod
from hastate.state.codec import Command, decode_value
from hastate.state.txn import Compare, Op, TxnResult

if TYPE_CHECKING:
    from hastate.state.watch import Watcher

T = TypeVar("T")


class Backend(Protocol):
    """The replicated key-value operations event streams use, and this replica's index."""

    index: EventIndex

    def read(self, keys: Sequence[str], *, linearizable: bool) -> dict[str, Any]:
        """Values of the present ``keys``; ``linearizable`` reflects every acknowledged write."""

    def records(self, keys: Sequence[str]) -> dict[str, tuple[Any, int]]:
        """(value, create_revision) of the present ``keys`` on this replica."""

    def transaction(self, compare: list[Compare], success: list[Op],
                    failure: list[Op]) -> TxnResult:
        """One atomic transaction (no op-count limit; the byte cap still holds)."""

    def watch(self, prefix: str, start_revision: int) -> "Watcher":
        """A watch of keys under ``prefix`` from ``start_revision``."""


class ManagerBackend:
    """:class:`Backend` over a running :class:`~hastate.StateManager`.

    The manager is typed loosely: it creates this backend (``sm.events``), so naming its
    class here would make the two import each other.
    """

    def __init__(self, sm: Any) -> None:
        self.sm = sm
        self.index: EventIndex = sm.event_index

    def read(self, keys: Sequence[str], *, linearizable: bool) -> dict[str, Any]:
        return self.sm.get_state("linearizable" if linearizable else "local", keys=list(keys))

    def records(self, keys: Sequence[str]) -> dict[str, tuple[Any, int]]:
        return {k: (decode_value(r[0]), r[2]) for k, r in self.sm.records(keys).items()}

    def transaction(self, compare: list[Compare], success: list[Op],
                    failure: list[Op]) -> TxnResult:
        max_ops = max(len(compare), len(success), len(failure), 1)
        wire = txn_mod.build(compare, success, failure, max_ops=max_ops,
                             max_bytes=self.sm.txn_limits["max_bytes"])
        result = self.sm.propose(Command(op="txn", txn=wire))
        if result[0] != "txn":
            raise WriteError(f"transaction refused by the state machine: {result!r}",
                             outcome_unknown=False)
        return txn_mod.to_result(result, success, failure)

    def watch(self, prefix: str, start_revision: int) -> "Watcher":
        return self.sm.watch(prefix, start_revision)


@dataclass(frozen=True)
class Plan(Generic[T]):
    """A decision: the keys to put and delete (none = nothing to write), the caller's result.

    ``result`` gets the commit revision (0 for a plan that writes nothing).
    """

    puts: dict[str, Any]
    result: Callable[[int], T]
    deletes: Sequence[str] = ()


def guard(key: str, values: dict[str, Any]) -> Compare:
    """"``key`` still holds the value in ``values`` (or is still absent)"."""
    return txn_mod.value(key) == values[key] if key in values else txn_mod.missing(key)


def commit(backend: Backend, keys: Sequence[str], decide: Callable[[dict[str, Any]], Plan[T]],
           *, rejections: tuple[type[Exception], ...], timeout: float = 30.0) -> T:
    """Read ``keys``, ``decide``, and commit the plan if none of ``keys`` changed meanwhile.

    The first read is local (cheap); a decision that rejects (raises one of
    ``rejections``) on a local read is confirmed on a linearizable read before it is
    raised, and one made on a failed transaction's values stands (they are current).

    :raises AppendContentionError: concurrent writers kept changing ``keys`` until timeout.
    """
    keys = list(dict.fromkeys(keys))
    values = backend.read(keys, linearizable=False)
    current = False
    attempts = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            plan = decide(values)
        except rejections:
            if current:
                raise
            values, current = backend.read(keys, linearizable=True), True
            continue
        if not plan.puts and not plan.deletes:
            return plan.result(0)
        result = backend.transaction([guard(k, values) for k in keys],
                                     [txn_mod.put(k, v) for k, v in plan.puts.items()] +
                                     [txn_mod.delete(k) for k in plan.deletes],
                                     [txn_mod.get(k) for k in keys])
        if result.succeeded:
            return plan.result(result.revision)
        values = {kv.key: kv.value for kv in result.responses if kv is not None}
        current = True
        attempts += 1
        if time.monotonic() > deadline:
            raise AppendContentionError(attempts)
