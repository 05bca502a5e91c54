"""The change history a node keeps for watchers: the last N revisions' changes.

Each mutating write the state machine applies produces one revision and its
changes (a transaction may change many keys at one revision). The history keeps
the newest ``size`` revisions; older ones are compacted: a watch that starts before the
oldest one held gets :class:`~hastate.errors.CompactedError`.

Across a restart: each dump carries the history's newest revisions (up to
``PERSISTED_BYTES`` of values, see :meth:`History.export`), the node loads it with its dump
(revision D) and replays its log after it, which regenerates every change after D. A
watcher can thus resume on a restarted node from before its dump, as far back as the dump's
history goes. A follower that installs the leader's dump takes the leader's history with it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, overload

from hastate.errors import CompactedError
from hastate.state import record as rec

#: Revisions a node keeps for watchers unless configured otherwise.
DEFAULT_HISTORY = 10_000
#: Bytes of values (new and previous, with their packed revisions) the history may hold;
#: older revisions go first. The history holds references to values the state may no longer
#: hold, so large values would otherwise pin ``DEFAULT_HISTORY`` times their size.
DEFAULT_HISTORY_BYTES = 64 << 20
#: Bytes of values a dump carries of the history (its newest revisions).
PERSISTED_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class Change:
    """One key changed at ``revision``; values are encoded (decoded for the watcher).

    ``type`` is ``put`` or ``delete``. For a put, ``value``/``create_revision``/``version``
    are the key's new ones; for a delete they are None/0/0, as in etcd. ``prev`` is the
    value before the change (None when the key was absent).
    """

    type: str
    key: str
    revision: int
    value: bytes | None
    create_revision: int
    version: int
    prev: bytes | None


class PackedChanges(Sequence[Change]):
    """The changes of one revision, held as the state's own packed records (no copies).

    ``flat`` is ``(key, new record or None, old record or None, ...)``, one triple per key
    (None as the new record: deleted). A :class:`Change` is built only when read, so a
    history of a million changes costs three references each, not a million objects.
    ``nbytes``: the bytes of the records it holds (new and old), as the history counts
    them against its bound.
    """

    __slots__ = ("revision", "_flat", "nbytes")

    def __init__(self, revision: int, flat: tuple[Any, ...], nbytes: int) -> None:
        self.revision = revision
        self._flat = flat
        self.nbytes = nbytes

    @classmethod
    def of(cls, revision: int, flat: Sequence[Any]) -> "PackedChanges":
        """The changes in ``flat`` (a list in the layout above) at ``revision``."""
        nbytes = sum(map(len, filter(None, flat[1::3]))) + \
            sum(map(len, filter(None, flat[2::3])))
        return cls(revision, tuple(flat), nbytes)

    def __len__(self) -> int:
        return len(self._flat) // 3

    @overload
    def __getitem__(self, i: int) -> Change: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Change, ...]: ...

    def __getitem__(self, i: int | slice) -> Change | tuple[Change, ...]:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        key, new, old = self._flat[3 * i:3 * i + 3]
        prev = rec.value(old) if old is not None else None
        if new is None:
            return Change("delete", key, self.revision, None, 0, 0, prev)
        value, _, create, version = rec.unpack(new)
        return Change("put", key, self.revision, value, create, version, prev)

    def __iter__(self) -> Iterator[Change]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackedChanges({tuple(self)!r})"


def _nbytes(changes: Sequence[Change]) -> int:
    if isinstance(changes, PackedChanges):
        return changes.nbytes
    return sum(len(c.value or b"") + len(c.prev or b"") for c in changes)


class History:
    """Bounded, revision-ordered list of (revision, changes); not thread-safe by itself.

    Keeps at most ``size`` revisions and, beyond the newest one, at most ``max_bytes`` of
    values.
    """

    def __init__(self, size: int = DEFAULT_HISTORY, max_bytes: int = DEFAULT_HISTORY_BYTES) -> None:
        if size < 1:
            raise ValueError(f"history size must be >= 1 revision, got {size}")
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._revisions: list[int] = []
        self._changes: list[Sequence[Change]] = []
        self._sizes: list[int] = []
        self._start = 0              # entries before _start are evicted (trimmed lazily)
        self.compacted = 0           # revisions <= this are no longer held
        self.last = 0                # the newest revision appended (or reset to)

    def __len__(self) -> int:
        return len(self._revisions) - self._start

    @property
    def oldest(self) -> int:
        """The oldest revision a watch may start at here."""
        return self.compacted + 1

    def append(self, revision: int, changes: Sequence[Change]) -> None:
        """Record ``changes`` at ``revision`` (greater than every revision before)."""
        if revision <= self.last:
            raise ValueError(f"history revision {revision} is not after {self.last}")
        size = _nbytes(changes)
        self._revisions.append(revision)
        self._changes.append(changes if isinstance(changes, PackedChanges) else tuple(changes))
        self._sizes.append(size)
        self.bytes += size
        self.last = revision
        while len(self) > self.size or (self.bytes > self.max_bytes and len(self) > 1):
            self.compacted = self._revisions[self._start]
            self.bytes -= self._sizes[self._start]
            self._changes[self._start] = ()       # release the values now
            self._start += 1
        if self._start > self.size:              # amortized trim of the evicted front
            del self._revisions[:self._start]
            del self._changes[:self._start]
            del self._sizes[:self._start]
            self._start = 0

    def reset(self, revision: int) -> None:
        """Forget everything: the state was replaced by one at ``revision`` (a dump)."""
        self._revisions, self._changes, self._sizes, self._start = [], [], [], 0
        self.bytes = 0
        self.compacted = self.last = revision

    def export(self, max_bytes: int = PERSISTED_BYTES) -> list[tuple[int, Sequence[Change]]]:
        """The newest revisions whose values fit in ``max_bytes`` (at least the newest one),
        oldest first: what a dump keeps (references; a revision's changes may be packed)."""
        first, total = len(self._revisions), 0
        while first > self._start and (total + self._sizes[first - 1] <= max_bytes
                                       or first == len(self._revisions)):
            first -= 1
            total += self._sizes[first]
        return list(zip(self._revisions[first:], self._changes[first:]))

    def restore(self, revision: int, entries: Sequence[tuple[int, Sequence[Change]]]) -> None:
        """Start over at ``revision`` (a loaded dump) holding ``entries`` (its history)."""
        entries = [(r, c) for r, c in entries if r <= revision]
        self.reset(entries[0][0] - 1 if entries else revision)
        for rev, changes in entries:
            self.append(rev, changes)
        self.last = revision

    def since(self, start: int, limit: int) -> list[tuple[int, tuple[Change, ...]]]:
        """Up to ``limit`` revisions from ``start`` on (a future start gives []).

        :raises CompactedError: ``start`` is older than :attr:`oldest`.
        """
        if start <= self.compacted:
            raise CompactedError(start, self.oldest)
        i = bisect.bisect_left(self._revisions, start, lo=self._start)
        j = min(i + limit, len(self._revisions))
        return [(r, tuple(c)) for r, c in zip(self._revisions[i:j], self._changes[i:j])]
