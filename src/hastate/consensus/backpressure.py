"""Bounds on what a node holds but has not committed, so overload fails fast instead of queueing.

Three bounds, all counted in entries and bytes of encoded commands:

* :class:`ProposalQueue` replaces PySyncObj's command queue: it refuses a command once it
  holds ``max_uncommitted_entries`` (PySyncObj then reports ``QUEUE_FULL``), and the leader
  drains it only while its uncommitted tail has room (:meth:`ProposalQueue.drain_budget`).
* :class:`UncommittedTail` is the leader's count of bytes appended but not yet committed.
* :class:`Admission` bounds the writes a process has proposed and not yet seen complete;
  past it a write is refused before it is proposed (``OverloadedError``).

The per-follower window (entries sent and not acknowledged) is ``Limits.max_inflight_entries``,
enforced by the leader's sender in ``consensus/raft.py``. None of these touches heartbeats,
lease pings or votes: those are messages, not log entries, and never wait in a queue here.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Limits:
    """Back-pressure settings (the cluster file's ``[limits]`` table)."""

    #: Most entries a leader holds appended-or-queued but not committed; also the bound of
    #: each process's own writes in flight.
    max_uncommitted_entries: int = 4096
    #: Same bound in bytes of encoded commands (4 MiB).
    max_uncommitted_bytes: int = 4 * 1024 * 1024
    #: Most entries sent to one follower and not yet acknowledged.
    max_inflight_entries: int = 256


class ProposalQueue:
    """A bounded FIFO of ``(command, callback)`` with PySyncObj's ``FastQueue`` interface.

    ``get_nowait`` also stops (raises ``queue.Empty``) once the budget set by
    :meth:`drain_budget` is spent, so the leader appends no more than its tail has room for;
    the rest stays queued, where :meth:`put_nowait` refuses new commands past ``max_entries``.
    """

    def __init__(self, max_entries: int) -> None:
        self._items: deque[tuple[bytes, object]] = deque()
        self._lock = threading.Lock()
        self._max = max_entries
        self._entries_left: int | None = None
        self._bytes_left = 0
        self.drained_bytes = 0

    def put_nowait(self, item: tuple[bytes, object]) -> None:
        with self._lock:
            if len(self._items) >= self._max:
                raise queue.Full()
            self._items.append(item)

    def get_nowait(self) -> tuple[bytes, object]:
        with self._lock:
            if not self._items or (self._entries_left is not None and
                                   (self._entries_left <= 0 or self._bytes_left <= 0)):
                raise queue.Empty()
            item = self._items.popleft()
        size = len(item[0])
        self.drained_bytes += size
        if self._entries_left is not None:
            self._entries_left -= 1
            self._bytes_left -= size
        return item

    def drain_budget(self, entries: int | None, nbytes: int = 0) -> None:
        """Allow the next drain ``entries`` commands and about ``nbytes`` (None: no bound).

        A command larger than the byte budget still passes when the budget is positive, so
        one big write cannot wait forever; the overshoot is that one command.
        """
        self._entries_left = entries
        self._bytes_left = nbytes
        self.drained_bytes = 0

    def __len__(self) -> int:
        return len(self._items)


class UncommittedTail:
    """Leader: bytes of the entries it appended and has not committed, by batch."""

    def __init__(self) -> None:
        self._batches: deque[tuple[int, int]] = deque()  # (last index of batch, bytes)
        self._bytes = 0

    def add(self, last_index: int, nbytes: int) -> None:
        if nbytes:
            self._batches.append((last_index, nbytes))
            self._bytes += nbytes

    def bytes_after(self, commit_index: int) -> int:
        """Bytes not yet committed once everything up to ``commit_index`` is."""
        batches = self._batches
        while batches and batches[0][0] <= commit_index:
            self._bytes -= batches.popleft()[1]
        return self._bytes

    def reset(self) -> None:
        self._batches.clear()
        self._bytes = 0


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
