"""This replica's index of events in global order, derived from the applied changes.

An event's global position is ``revision * SLOTS + i``: the cluster revision its append
committed at and its index ``i`` in that append. Positions increase strictly in commit
order, with gaps (the revision also counts every other write), so an append needs no
namespace-wide counter: appends to different streams write disjoint keys and never
conflict.

The replicated state is a dict without order, so each replica keeps this index of its own:
for every namespace in use, the positions and keys of its events, ascending. The state
machine feeds it every mutating write's changes on the apply path, after the watch hub (so
a watch from the index's revision + 1 misses nothing); a namespace is built by one scan the
first time it is used and again after a dump replaced the state. Nothing here is
replicated or written: every replica derives the same index from the same state.

Inside one revision the index takes the event keys in the order the transaction created
them; every append puts its events in the order of their ``i`` (what a scan decodes), so
both ways agree.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from typing import TYPE_CHECKING, Callable, Sequence

from hastate.state.codec import decode_value
from hastate.state.txn import Record

if TYPE_CHECKING:
    from hastate.state.history import Change

#: A replica's scan: (key, record) of the keys under a prefix, and the revision they reflect.
Scan = Callable[[str], "tuple[list[tuple[str, Record]], int]"]

#: Positions one revision holds: the most events one append may carry.
SLOTS = 1000


def position(revision: int, index: int) -> int:
    """The global position of the ``index``-th event of the append at ``revision``."""
    return revision * SLOTS + index


def revision_of(position_: int) -> int:
    """The cluster revision of the append that stored the event at ``position_``."""
    return position_ // SLOTS


class _Namespace:
    """The index of one namespace's event keys (those starting with ``prefix``)."""

    __slots__ = ("prefix", "positions", "keys", "dead", "scanned", "ready", "building",
                 "pending")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.positions: array[int] = array("q")
        self.keys: list[str] = []
        self.dead: set[str] = set()  # deleted (truncated) keys still in the lists
        self.scanned = 0            # the revision of the scan it was built from
        self.ready = False
        self.building = False
        # fed while the scan ran: (position, key) created, (-revision, key) deleted
        self.pending: list[tuple[int, str]] = []

    def add(self, position_: int, key: str) -> None:
        self.positions.append(position_)
        self.keys.append(key)

    def drop(self, key: str) -> None:
        """Forget a deleted key: at once at the tail, else once many are dead."""
        self.dead.add(key)
        while self.keys and self.keys[-1] in self.dead:
            self.dead.discard(self.keys.pop())
            self.positions.pop()
        if len(self.dead) > max(1024, len(self.keys) // 2):
            live = [(p, k) for p, k in zip(self.positions, self.keys) if k not in self.dead]
            self.positions = array("q", (p for p, _ in live))
            self.keys = [k for _, k in live]
            self.dead = set()


class EventIndex:
    """Positions and keys of every used namespace's events on this replica, ascending."""

    def __init__(self, scan: Scan, revision: int) -> None:
        """``scan(prefix)``: the replica's (key, record) pairs under ``prefix`` and the
        revision they reflect; ``revision``: the replica's revision when feeding starts."""
        self._scan = scan
        self._cond = threading.Condition(threading.Lock())
        self._spaces: dict[str, _Namespace] = {}
        self._fed = revision                 # the last revision the apply path fed
        self._generation = 0                 # bumped when a dump replaces the state

    # -- queries ----------------------------------------------------------------------------
    def after(self, prefix: str, after: int, limit: int) -> tuple[list[tuple[int, str]], int]:
        """Up to ``limit`` (position, key) of events under ``prefix`` with positions after
        ``after``, ascending, and the revision the index reflects: every event committed
        at or before it and after ``after`` is in the list unless the list is full."""
        with self._cond:
            space = self._ready(prefix)
            start = bisect.bisect_right(space.positions, after)
            found: list[tuple[int, str]] = []
            while start < len(space.keys) and len(found) < limit:
                end = start + limit - len(found)
                found += [(p, k) for p, k in zip(space.positions[start:end],
                                                 space.keys[start:end]) if k not in space.dead]
                start = end
            return found, max(space.scanned, self._fed)

    def last(self, prefix: str) -> int:
        """The position of the namespace's last stored event (0: none)."""
        with self._cond:
            space = self._ready(prefix)
            return space.positions[-1] if space.positions else 0

    # -- the apply path (ChangeListener) -----------------------------------------------------
    def changed(self, revision: int, changes: Sequence["Change"]) -> None:
        """Index the event keys ``changes`` created at ``revision``; never blocks for long."""
        with self._cond:
            self._fed = revision
            for space in self._spaces.values():
                if not (space.ready or space.building) or revision <= space.scanned:
                    continue
                i = 0
                for c in changes:
                    if not c.key.startswith(space.prefix):
                        continue
                    if c.type == "delete":
                        if space.building:
                            space.pending.append((-revision, c.key))
                        else:
                            space.drop(c.key)
                    elif c.create_revision == revision:
                        if space.building:
                            space.pending.append((position(revision, i), c.key))
                        else:
                            space.add(position(revision, i), c.key)
                        i += 1

    def reset(self, revision: int, history: Sequence[object] = ()) -> None:
        """A dump replaced the state: every namespace is built again on its next use."""
        with self._cond:
            self._fed = revision
            self._generation += 1
            for space in self._spaces.values():
                space.ready, space.positions, space.keys, space.dead = \
                    False, array("q"), [], set()

    def export(self) -> list[tuple[int, tuple["Change", ...]]]:
        """Nothing to keep in a dump: the index is derived from the state."""
        return []

    # -- building ----------------------------------------------------------------------------
    def _ready(self, prefix: str) -> _Namespace:
        """The namespace's index, built first if needed (called holding the condition)."""
        while True:
            space = self._spaces.get(prefix)
            if space is None:
                space = self._spaces[prefix] = _Namespace(prefix)
            if space.ready:
                return space
            if space.building:
                self._cond.wait()
                continue
            self._build(space)

    def _build(self, space: _Namespace) -> None:
        """Scan the state for ``space`` (the condition is released while scanning)."""
        space.building, space.pending = True, []
        generation = self._generation
        self._cond.release()
        try:
            records, scanned = self._scan(space.prefix)
            entries = sorted((position(record[2], decode_value(record[0])["i"]), key)
                             for key, record in records)
        finally:
            self._cond.acquire()
            space.building = False
            self._cond.notify_all()
        if generation != self._generation:
            return                              # a dump came in meanwhile: scan again
        space.positions = array("q", (p for p, _ in entries))
        space.keys = [k for _, k in entries]
        space.scanned, space.ready = scanned, True
        for fed, key in space.pending:     # what the apply path fed after the scan
            if fed < 0 and -fed > scanned:
                space.drop(key)
            elif fed > 0 and revision_of(fed) > scanned:
                space.add(fed, key)
        space.pending = []
