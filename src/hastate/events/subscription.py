"""Catch-up subscriptions: replay from a checkpoint by reads, then go live on a watch.

The subscription reads the namespace head and the revision it was read at (one local
snapshot), delivers every position up to that head by reads, then watches position keys
from that revision + 1: every later event has a larger position, so nothing falls between
the two. Positions are delivered strictly in order, each once: an event the watch offers
that is not the next position (or any watch error: compaction, overflow, the node stopping
or installing a dump) sends the subscription back to catching up by reads from the last
delivered position. A leader change does not disturb it (reads and watch are local); after
the subscriber restarts, ``subscribe(after=checkpoint)`` resumes with no gap or repeat.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Iterator, Protocol

from hastate.errors import WatchError
from hastate.events.backend import Backend
from hastate.events.records import Filter, Layout, RecordedEvent, decode_event

if TYPE_CHECKING:
    from hastate.state.watch import Watcher

logger = logging.getLogger(__name__)

#: Seconds between checks of ``stop()`` while waiting for live events.
_POLL = 0.2


class Source(Protocol):
    """What a subscription reads (:class:`~hastate.events.streams.EventStreams` has it)."""

    backend: Backend
    layout: Layout

    def read_all(self, from_position: int = 1, *, limit: int | None = None,
                 filter: Filter | None = None, linearizable: bool = True,
                 to_position: int | None = None) -> list[RecordedEvent]:
        """Events of every stream from ``from_position`` in global order."""


class CatchUpSubscription:
    """Iterate to receive events after ``after``; ``position`` is the last one delivered."""

    def __init__(self, streams: Source, after: int, filter: Filter | None) -> None:
        self._streams = streams
        self._filter = filter
        self.position = after
        self._stopped = threading.Event()
        self._watcher: "Watcher | None" = None

    def stop(self) -> None:
        """End the iteration (from any thread)."""
        self._stopped.set()
        watcher = self._watcher
        if watcher is not None:
            watcher.cancel()

    def __enter__(self) -> "CatchUpSubscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[RecordedEvent]:
        while not self._stopped.is_set():
            revision = yield from self._catch_up()
            yield from self._live(revision)

    def _deliver(self, event: RecordedEvent) -> bool:
        """Advance past ``event``; True when the caller should see it."""
        self.position = event.position
        return self._filter is None or self._filter(event)

    def _catch_up(self) -> Iterator[RecordedEvent]:
        lay = self._streams.layout
        values, revision = self._streams.backend.read_at([lay.head])
        head = values.get(lay.head, 0)
        while self.position < head and not self._stopped.is_set():
            page = self._streams.read_all(self.position + 1, to_position=head,
                                          limit=256, linearizable=False)
            if not page:
                break
            for event in page:
                if self._deliver(event):
                    yield event
        if not self._stopped.is_set():
            self.position = max(self.position, head)   # the rest up to head: truncated
        return revision

    def _live(self, revision: int) -> Iterator[RecordedEvent]:
        lay = self._streams.layout
        try:
            self._watcher = self._streams.backend.watch(lay.position_prefix, revision + 1)
        except WatchError as exc:
            logger.info("subscription catching up again", extra={"reason": str(exc)})
            return
        try:
            while not self._stopped.is_set():
                change = self._watcher.get(timeout=_POLL)
                if change is None or change.type != "put":
                    continue
                position = lay.position_of(change.key)
                if position <= self.position:
                    continue
                if position != self.position + 1:
                    return  # not the next one: read the missing ones
                event = decode_event(position, change.value)
                if self._deliver(event):
                    yield event
        except WatchError as exc:
            logger.info("subscription catching up again", extra={"reason": str(exc),
                                                                 "position": self.position})
        finally:
            self._watcher.cancel()
            self._watcher = None
