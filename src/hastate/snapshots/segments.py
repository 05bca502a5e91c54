"""Log shipping: committed commands uploaded as segments every ``ship_interval``.

Between snapshots the leader ships what was applied since its last segment, so a restore
can replay up to about one ``ship_interval`` before the disaster (the recovery point).
Every node buffers applied commands (a bounded ring, filled on the Raft thread at the cost
of one append); only the node holding the lease uploads. A segment names the index it
continues from (``prev``), so restore can prove the chain has no gap.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from hastate.errors import CorruptDataError, SnapshotError
from hastate.snapshots.format import SEGMENT_PREFIX, parse_segment_name, segment_name
from hastate.snapshots.store import SnapshotStore, location
from hastate.state.codec import Command
from hastate.state.dump import decode_dump, encode_dump

logger = logging.getLogger(__name__)

#: Applied commands a node keeps for shipping; past that the oldest are dropped and the
#: next segment must start from a snapshot instead.
BUFFER_LIMIT = 100_000


@dataclass(frozen=True)
class Segment:
    """A decoded, verified segment: ``entries`` are (index, wall time, encoded command)."""

    name: str
    prev: int
    first: int
    last: int
    term: int
    entries: list[tuple[int, float, bytes]]


def encode_segment(entries: list[tuple[int, float, bytes]], *, cluster: str, prev: int,
                   term: int) -> tuple[str, bytes]:
    """Object name and checksummed blob for ``entries`` (ascending indexes after ``prev``)."""
    first, last = entries[0][0], entries[-1][0]
    _, blob = encode_dump({"entries": [list(e) for e in entries]}, cluster=cluster, index=last,
                          term=term, keys=len(entries),
                          extra={"kind": "segment", "prev": prev, "first": first})
    return segment_name(first, last), blob


def read_segment(store: SnapshotStore, name: str, cluster: str) -> Segment:
    """Download and verify one segment; CorruptDataError names the object and the check."""
    where = location(store, name)
    header, body = decode_dump(store.read(name), source=where, cluster=cluster)
    if header.extra.get("kind") != "segment":
        raise CorruptDataError(f"{where}: not a log segment (kind {header.extra.get('kind')!r})")
    entries = [(int(i), float(t), bytes(raw)) for i, t, raw in body["entries"]]
    return Segment(name=name, prev=int(header.extra["prev"]), first=int(header.extra["first"]),
                   last=header.index, term=header.term, entries=entries)


def list_segments(store: SnapshotStore) -> list[tuple[int, int, str]]:
    """(first, last, name) of every segment in the store, ascending."""
    found = []
    for info in store.list(SEGMENT_PREFIX):
        parsed = parse_segment_name(info.name)
        if parsed is not None:
            found.append((parsed[0], parsed[1], info.name))
    return sorted(found)


class LogShipper:
    """Buffers applied commands on every node; the lease holder uploads them as segments."""

    def __init__(self, store: SnapshotStore, *, cluster: str, interval: float,
                 is_leader: Callable[[], bool], term: Callable[[], int],
                 on_gap: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.cluster = cluster
        self.interval = interval
        self._is_leader = is_leader
        self._term = term
        self._on_gap = on_gap
        self._clock = clock
        # (index, previous command's index, wall time, command)
        self._buffer: collections.deque[tuple[int, int, float, Command]] = \
            collections.deque(maxlen=BUFFER_LIMIT)
        self._shipped: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.segments_total = 0
        self.failures_total = 0
        self.last_error: str | None = None
        self.last_shipped_at: float | None = None

    # -- Raft thread -------------------------------------------------------------------------
    def on_apply(self, index: int, previous: int, command: Command, _result: tuple) -> None:
        """Apply listener: remember the command (and the index of the one before it)."""
        self._buffer.append((index, previous, self._clock(), command))

    # -- shipping ----------------------------------------------------------------------------
    @property
    def shipped_index(self) -> int | None:
        """Last index known to be in the store (None until this node has looked)."""
        return self._shipped

    def start(self) -> None:
        """Start the shipping thread."""
        self._thread = threading.Thread(target=self._run, name="hastate-log-shipper",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ship what is buffered (if leading) and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.ship_once()
        self.ship_once()

    def ship_once(self) -> int:
        """Upload one segment with everything applied since the last one; return its size."""
        if not self._is_leader():
            self._shipped = None  # another leader may ship meanwhile: re-read when we lead
            return 0
        try:
            if self._shipped is None:
                segments = list_segments(self.store)
                self._shipped = segments[-1][1] if segments else 0
            pending = [e for e in list(self._buffer) if e[0] > self._shipped]
            if not pending:
                return 0
            prev = pending[0][1]
            if prev > self._shipped:
                # This node never saw the commands in between (it started, or its buffer
                # overflowed, after them): the segment says where it really starts, so
                # restore stops at the gap unless a newer snapshot covers it.
                logger.warning("log shipping gap: store ends at %d, this node holds commands "
                               "after %d; a snapshot will cover it", self._shipped, prev)
                if self._on_gap is not None:
                    self._on_gap()
            entries = [(i, t, c.encode()) for i, _, t, c in pending]
            name, blob = encode_segment(entries, cluster=self.cluster, prev=prev,
                                        term=self._term())
            self.store.write(name, blob)
            self._shipped = entries[-1][0]
            self.segments_total += 1
            self.last_shipped_at = self._clock()
            self._trim()
            return len(entries)
        except SnapshotError as exc:
            self.failures_total += 1
            self.last_error = str(exc)
            logger.warning("log shipping failed: %s", exc)
            return 0

    def _trim(self) -> None:
        while self._buffer and self._shipped is not None and self._buffer[0][0] <= self._shipped:
            self._buffer.popleft()

    def status(self) -> dict[str, Any]:
        """Counters for status output and metrics."""
        return {"shipped_index": self._shipped, "segments_total": self.segments_total,
                "failures_total": self.failures_total, "last_error": self.last_error,
                "last_shipped_at": self.last_shipped_at, "buffered": len(self._buffer)}
