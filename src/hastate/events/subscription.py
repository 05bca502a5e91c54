"""Catch-up subscriptions: replay from a checkpoint by reads, then go live on a watch.

The subscription reads this replica's event index page by page after its position; a page
that is not full comes with the revision R the index reflected when it was read, and holds
every event committed up to R. It then watches the event keys from R + 1: every later event
was committed at a later revision, so it has a larger position and nothing falls between
the two. The watch delivers changes in revision order, and the events of one append in
their order, so live events come in position order; one at or before the last delivered
position is skipped (never delivered twice). Any watch error (compaction, overflow, the node
stopping or installing a dump) sends the subscription back to reading from the last
delivered position. A leader change does not disturb it (reads and watch are local); after
the subscriber restarts, ``subscribe(after=checkpoint)`` resumes with no gap or repeat.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol

from hastate.errors import WatchError
from hastate.events.backend import Backend
from hastate.events.index import position
from hastate.events.records import Filter, Layout, RecordedEvent, decode_event

if TYPE_CHECKING:
    from hastate.state.watch import Watcher

logger = logging.getLogger(__name__)

#: Seconds between checks of ``stop()`` while waiting for live events.
_POLL = 0.2
#: Events read per round while catching up.
_PAGE = 256


class Source(Protocol):
    """What a subscription reads (:class:`~hastate.events.streams.EventStreams` has it)."""

    backend: Backend
    layout: Layout

    def read_keys(self, keys: Iterable[str]) -> list[RecordedEvent]:
        """The events at event ``keys`` on this replica, in that order."""


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
        """Deliver what the index holds; returns the revision the last (short) page was at."""
        prefix = self._streams.layout.event_prefix
        while True:
            entries, revision = self._streams.backend.index.after(prefix, self.position, _PAGE)
            for event in self._streams.read_keys(k for _, k in entries):
                if self._stopped.is_set():
                    return revision
                if self._deliver(event):
                    yield event
            if entries:
                self.position = max(self.position, entries[-1][0])   # the rest: truncated
            if len(entries) < _PAGE or self._stopped.is_set():
                return revision

    def _live(self, revision: int) -> Iterator[RecordedEvent]:
        lay = self._streams.layout
        try:
            self._watcher = self._streams.backend.watch(lay.event_prefix, revision + 1)
        except WatchError as exc:
            logger.info("subscription catching up again", extra={"reason": str(exc)})
            return
        try:
            while not self._stopped.is_set():
                change = self._watcher.get(timeout=_POLL)
                if change is None or change.type != "put" or \
                        change.create_revision != change.revision:
                    continue
                if position(change.revision, change.value["i"]) <= self.position:
                    continue
                event = decode_event(change.value, change.create_revision)
                if self._deliver(event):
                    yield event
        except WatchError as exc:
            logger.info("subscription catching up again", extra={"reason": str(exc),
                                                                 "position": self.position})
        finally:
            self._watcher.cancel()
            self._watcher = None
