"""Bounds on what a node holds but has not committed, so overload fails fast instead of queueing.

Three bounds, all counted in commands and bytes of encoded commands (a log entry that
groups several waiting proposals, ``consensus/grouping.py``, counts each of them):

* :class:`ProposalQueue` replaces PySyncObj's command queue: it refuses a command once it
  holds ``max_uncommitted_entries`` (PySyncObj then reports ``QUEUE_FULL``), and the leader
  drains it only while its uncommitted tail has room (:meth:`ProposalQueue.drain_budget`).
* :class:`UncommittedTail` is the leader's count of bytes (and grouped commands) appended
  but not yet committed.
* :class:`Admission` bounds the writes a process has proposed and not yet seen complete;
  past it a write is refused before it is proposed (``OverloadedError``).

The per-follower window (entries sent and not acknowledged) is ``Limits.max_inflight_entries``
and ``max_inflight_bytes`` (sizes from :class:`EntrySizes`), enforced by the leader's sender
in ``consensus/raft.py``. None of these touches heartbeats,
lease pings or votes: those are messages, not log entries, and never wait in a queue here.
"""

from __future__ import annotations

import queue
import threading
import time
from array import array
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from hastate.consensus.grouping import Grouper, Proposal, take_group


@dataclass(frozen=True)
class Limits:
    """Back-pressure settings (the cluster file's ``[limits]`` table)."""

    #: Most commands a leader holds appended-or-queued but not committed (each member of a
    #: grouped entry counts); also the bound of each process's own writes in flight.
    max_uncommitted_entries: int = 4096
    #: Same bound in bytes of encoded commands (4 MiB).
    max_uncommitted_bytes: int = 4 * 1024 * 1024
    #: Most entries sent to one follower and not yet acknowledged.
    max_inflight_entries: int = 256
    #: Same per-follower bound in bytes (1 MiB): large values cannot fill the connection
    #: ahead of lease pings on a slow link. One entry is always allowed.
    max_inflight_bytes: int = 1024 * 1024


class ProposalQueue:
    """A bounded FIFO of ``(command, callback)`` with PySyncObj's ``FastQueue`` interface.

    ``get_nowait`` also stops (raises ``queue.Empty``) once the budget set by
    :meth:`drain_budget` is spent, so the leader appends no more than its tail has room for;
    the rest stays queued, where :meth:`put_nowait` refuses new commands past ``max_entries``.

    It also holds :class:`~hastate.consensus.grouping.Proposal` items (state-machine
    commands): ``get_nowait`` hands a run of them to ``grouper`` and returns the one batch
    entry it builds. Bounds and budgets count commands, whether or not they share an entry.
    """

    def __init__(self, max_entries: int, grouper: Grouper | None = None) -> None:
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._max = max_entries
        self._grouper = grouper
        self._entries_left: int | None = None
        self._bytes_left = 0
        self.drained_bytes = 0
        self.drained_sizes: list[int] = []
        self.drained_grouped = 0  # commands drained beyond one per entry (batch members)

    def put_nowait(self, item: tuple[bytes, object] | Proposal) -> None:
        with self._lock:
            if len(self._items) >= self._max:
                raise queue.Full()
            self._items.append(item)

    def get_nowait(self) -> tuple[bytes, object]:
        # Only the tick thread takes; deque.popleft is atomic, so no lock (the lock keeps
        # put_nowait's check-then-append from overshooting the bound).
        if self._entries_left is not None and (self._entries_left <= 0 or
                                               self._bytes_left <= 0):
            raise queue.Empty()
        try:
            item = self._items.popleft()
        except IndexError:
            raise queue.Empty() from None
        count = 1
        if type(item) is Proposal:
            group = take_group(item, self._peek, self._items.popleft, self._entries_left,
                               self._bytes_left)
            item = self._grouper.pack(group)
            count = len(group)
            self.drained_grouped += count - 1
        size = len(item[0])
        self.drained_bytes += size
        self.drained_sizes.append(size)
        if self._entries_left is not None:
            self._entries_left -= count
            self._bytes_left -= size
        return item

    def _peek(self) -> Any:
        items = self._items
        return items[0] if items else None

    def drain_budget(self, entries: int | None, nbytes: int = 0) -> None:
        """Allow the next drain ``entries`` commands and about ``nbytes`` (None: no bound).

        A command larger than the byte budget still passes when the budget is positive, so
        one big write cannot wait forever; the overshoot is that one command.
        """
        self._entries_left = entries
        self._bytes_left = nbytes
        self.drained_bytes = 0
        self.drained_sizes = []
        self.drained_grouped = 0

    def __len__(self) -> int:
        return len(self._items)


class UncommittedTail:
    """Leader: bytes of the entries it appended and has not committed, by drain, and the
    commands they hold beyond one per entry (members of grouped entries). Thread-safe, so
    status readers may ask too."""

    def __init__(self) -> None:
        # (last index of the drain, bytes, extra commands)
        self._drains: deque[tuple[int, int, int]] = deque()
        self._lock = threading.Lock()
        self._bytes = 0
        self._extra = 0

    def add(self, last_index: int, nbytes: int, extra: int = 0) -> None:
        if nbytes or extra:
            with self._lock:
                self._drains.append((last_index, nbytes, extra))
                self._bytes += nbytes
                self._extra += extra

    def after(self, commit_index: int) -> tuple[int, int]:
        """(extra commands, bytes) not yet committed once everything up to ``commit_index``
        is."""
        with self._lock:
            drains = self._drains
            while drains and drains[0][0] <= commit_index:
                _, nbytes, extra = drains.popleft()
                self._bytes -= nbytes
                self._extra -= extra
            return self._extra, self._bytes

    def reset(self) -> None:
        with self._lock:
            self._drains.clear()
            self._bytes = 0
            self._extra = 0


class EntrySizes:
    """Leader: encoded size of the recent entries it appended, to cap a follower's window
    in bytes. Entries it did not append (earlier terms) or forgot have unknown sizes: no
    byte cap applies to a window that starts among them."""

    def __init__(self, keep: int = 65536) -> None:
        self._keep = keep
        self._first = 0                # index of the entry _cum[0] describes
        self._cum = array("q")         # _cum[i]: total bytes of entries up to _first+i
        self._base = 0                 # the total before _first (entries forgotten)

    def add(self, first_index: int, sizes: list[int]) -> None:
        """Record the sizes of entries ``first_index``, ``first_index + 1``, ..."""
        if not self._cum or first_index != self._first + len(self._cum):
            self.reset()
            self._first = first_index
        running = self._cum[-1] if self._cum else 0
        for size in sizes:
            running += size
            self._cum.append(running)
        if len(self._cum) > 2 * self._keep:   # forget the oldest, amortized O(1) per entry
            drop = len(self._cum) - self._keep
            self._base = self._cum[drop - 1]
            del self._cum[:drop]
            self._first += drop

    def cap(self, acked: int, max_index: int, max_bytes: int) -> int:
        """The highest index <= ``max_index`` such that entries ``acked + 1`` .. index hold at
        most ``max_bytes`` (but at least ``acked + 1``: one entry always goes)."""
        start = acked + 1 - self._first      # position of the window's first entry
        if start < 0 or start >= len(self._cum):
            return max_index
        base = self._cum[start - 1] if start > 0 else self._base
        end = min(max_index - self._first + 1, len(self._cum))
        fits = bisect_right(self._cum, base + max_bytes, start, end) - start
        return max(acked + 1, acked + fits) if fits < end - start else max_index

    def reset(self) -> None:
        self._cum = array("q")
        self._first = 0
        self._base = 0


class Admission:
    """Counts this process's writes in flight; refuses one that would pass the limits.

    Thread-safe. :meth:`retry_after` estimates how long until there is room, from the rate
    at which writes have been completing.
    """

    def __init__(self, max_entries: int, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self.entries = 0
        self.nbytes = 0
        self.refused = 0
        self._window_start = clock()
        self._window_done = 0
        self._rate = 0.0  # completions per second, smoothed

    def try_acquire(self, nbytes: int) -> bool:
        """Take room for one write of ``nbytes``; False (and nothing taken) when full.

        A single write larger than the byte limit is admitted when nothing else is in flight.
        """
        with self._lock:
            if self.entries >= self._max_entries or \
                    (self.entries and self.nbytes + nbytes > self._max_bytes):
                self.refused += 1
                return False
            self.entries += 1
            self.nbytes += nbytes
            return True

    def release(self, nbytes: int) -> None:
        """Give back the room of one completed write (whatever its outcome)."""
        with self._lock:
            self.entries -= 1
            self.nbytes -= nbytes
            self._window_done += 1
            now = self._clock()
            elapsed = now - self._window_start
            if elapsed >= 0.1:
                rate = self._window_done / elapsed
                self._rate = rate if not self._rate else 0.5 * self._rate + 0.5 * rate
                self._window_start, self._window_done = now, 0

    def retry_after(self) -> float:
        """Seconds after which a refused write is likely to find room (5 ms - 1 s)."""
        with self._lock:
            rate, backlog = self._rate, max(1, self.entries - self._max_entries // 2)
        if rate <= 0:
            return 0.05
        return min(1.0, max(0.005, backlog / rate))
