"""A connection's outgoing bytes: frames queued whole, sent from the front in slices.

A single ``bytearray`` with appends at the end and deletes at the front copies its whole
content whenever it grows after a front delete; with a megabyte queued for a slow follower
(4 KiB entries under pipelined load) that was a ~100 µs copy per message on the Raft
thread. Frames are kept as they are and handed to ``sendmsg`` as a list of views (joined
only for a TLS socket, which has no ``sendmsg``).
"""

from __future__ import annotations

from collections import deque
from itertools import islice


#: Views handed to one ``sendmsg`` (the kernel refuses more than IOV_MAX, 1024 on Linux).
MAX_PARTS = 256


class WriteQueue:
    """FIFO of bytes: :meth:`append` frames, :meth:`peek` the next slice, :meth:`consume` it."""

    def __init__(self) -> None:
        self._frames: deque[bytes] = deque()
        self._head = 0      # bytes of the first frame already sent
        self._size = 0      # bytes queued and not sent

    def __len__(self) -> int:
        return self._size

    def append(self, frame: bytes) -> None:
        """Queue ``frame`` after everything queued before."""
        if frame:
            self._frames.append(frame)
            self._size += len(frame)

    def slices(self, size: int, max_parts: int = MAX_PARTS) -> list[memoryview]:
        """Up to the next ``size`` bytes as views of at most ``max_parts`` queued frames (no
        copy; for ``socket.sendmsg``), unchanged until :meth:`consume`."""
        first = memoryview(self._frames[0])[self._head:self._head + size]
        parts = [first]
        taken = len(first)
        for frame in islice(self._frames, 1, None):
            if taken >= size or len(parts) >= max_parts:
                break
            part = memoryview(frame)[:size - taken]
            parts.append(part)
            taken += len(part)
        return parts

    def peek(self, size: int) -> bytes | memoryview:
        """The next ``min(size, len(self))`` bytes in one buffer (joined only when they
        span frames), unchanged until :meth:`consume`."""
        parts = self.slices(size, max_parts=len(self._frames))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def consume(self, sent: int) -> None:
        """Drop the first ``sent`` bytes (what one ``send`` call wrote)."""
        self._size -= sent
        while sent:
            left = len(self._frames[0]) - self._head
            if sent < left:
                self._head += sent
                return
            sent -= left
            self._frames.popleft()
            self._head = 0
