"""A pipe in PySyncObj's poller: any thread writes a byte and the tick thread's poll ends."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from pysyncobj.poller import POLL_EVENT_TYPE


class PollWaker:
    """Wakes the tick thread from any thread; ``on_wake`` runs on the tick thread after.

    Wakes coalesce: while a byte is in the pipe and not drained, :meth:`wake` makes no
    syscall (under pipelined load one write per proposal made the proposer and the tick
    thread trade the GIL around every ``os.write``).
    """

    def __init__(self, poller: Any, on_wake: Callable[[], None] | None = None) -> None:
        self._poller = poller
        self._on_wake = on_wake
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._lock = threading.Lock()
        self._closed = False
        self._pending = False  # a byte is in the pipe and not drained yet
        poller.subscribe(self._r, self._drain, POLL_EVENT_TYPE.READ)

    def wake(self) -> None:
        """Any thread: end the tick thread's current (or next) poll."""
        if self._pending:
            return  # the tick thread leaves poll() anyway and handles everything queued
        self._pending = True
        # The lock keeps a late wake() from writing to a descriptor number that close()
        # released and the process reused for another file.
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._w, b"x")
            except BlockingIOError:
                pass  # already pending: the poll will return anyway

    def _drain(self, _fd: int, _mask: int) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        # After reading, not before: a wake's byte read here would leave the flag set with
        # an empty pipe, and no later wake would write again. A wake that still sees the
        # flag queued its work before, and the tick thread handles it after this drain.
        self._pending = False
        if self._on_wake is not None:
            self._on_wake()

    def close(self) -> None:
        """Leave the poller and close the pipe; later wakes do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._poller.unsubscribe(self._r)
            os.close(self._r)
            os.close(self._w)
