"""Event streams on hastate: atomic, idempotent appends with expected versions, and reads.

Example::

    from hastate.events import NewEvent, NO_STREAM
    result = sm.events.append("position-BTC", [NewEvent("OrderFilled", {"qty": Decimal("2")},
                              {"correlation_id": order_id})], expected_version=NO_STREAM)
    for event in sm.events.read_stream("position-BTC"):
        ...

Semantics (EventStoreDB's): stream versions count from 0 without gaps; every event also
gets a global position over all streams of the namespace (also the ``eventsourcing``
library's notification id): ``revision * SLOTS + i``, the cluster revision its append
committed at and its index in the append, so positions grow strictly in commit order, with
gaps (see :mod:`hastate.events.index`). One append is ONE hastate transaction: all its
events or none, compared against the stream's versions and every event id, and nothing
else, so appends to different streams never conflict. Appending ids that are already
stored as exactly this append (a retry after an unknown outcome, even via another node)
returns the original positions.

Appends to one stream from one process queue on a local lock (one of :data:`STRIPES`,
chosen by the stream's name), so only other processes race on a stream: the loser's
transaction fails and it decides again with the values the failure returned.
"""

from __future__ import annotations

import threading
import time
import zlib
from contextlib import ExitStack
from typing import Any, Iterable, Iterator, Sequence

from hastate.errors import DuplicateEventIdError, EventStreamError, WrongExpectedVersionError
from hastate.events.backend import Backend, Plan, commit
from hastate.events.index import SLOTS, position
from hastate.events.records import (ANY, EXPECTED_KINDS, NO_STREAM, STREAM_EXISTS,
                                    AppendResult, Filter, Layout, NewEvent, RecordedEvent,
                                    decode_event, encode_event, iter_versions, last_version)
from hastate.events.subscription import CatchUpSubscription

#: Events per append (one transaction; one revision holds SLOTS positions): 2 keys each.
MAX_APPEND = SLOTS
#: Events read per round when scanning ``$all``.
PAGE = 256
#: Local locks appends to a stream queue on (by a hash of the stream's name).
STRIPES = 64


class StreamLocks:
    """Striped local locks: appends to one stream from this process take turns."""

    def __init__(self) -> None:
        self._locks = [threading.Lock() for _ in range(STRIPES)]

    def holding(self, streams: Iterable[str]) -> ExitStack:
        """A context holding the locks of ``streams`` (taken in one order: no deadlock)."""
        stack = ExitStack()
        for stripe in sorted({zlib.crc32(s.encode()) % STRIPES for s in streams}):
            stack.enter_context(self._locks[stripe])
        return stack


class EventStreams:
    """Streams of one namespace on one backend (``sm.events`` is the default namespace)."""

    def __init__(self, backend: Backend, namespace: str = "events", *,
                 timeout: float = 30.0) -> None:
        self.backend = backend
        self.layout = Layout(namespace)
        self.timeout = timeout
        self.locks = StreamLocks()

    # -- writes ---------------------------------------------------------------------------------
    def append(self, stream: str, events: Sequence[NewEvent],
               expected_version: int | str = ANY) -> AppendResult:
        """Append ``events`` to ``stream`` atomically if its version is as expected.

        ``expected_version``: ``ANY``, ``NO_STREAM``, ``STREAM_EXISTS`` or the stream's
        last version (an int >= 0).

        :raises WrongExpectedVersionError: the stream's version differs (names the actual).
        :raises DuplicateEventIdError: some ids are already stored by another append.
        :raises WriteError: not confirmed in time (``outcome_unknown``: retry with the same
            events, whose ids make the retry idempotent).
        """
        _check_append(stream, events, expected_version)
        lay = self.layout
        ids = [e.id for e in events]
        keys = [lay.stream(stream), *(lay.event_id(i) for i in ids)]

        def decide(values: dict[str, Any]) -> Plan[AppendResult]:
            stored = [values[lay.event_id(i)] for i in ids if lay.event_id(i) in values]
            if stored:
                return Plan({}, lambda _rev: self._replayed(stream, ids, stored))
            current = last_version(values.get(lay.stream(stream)))
            if not _version_ok(expected_version, current):
                raise WrongExpectedVersionError(stream, expected_version, current)
            now = time.time()
            puts: dict[str, Any] = {}
            versions = list(range(current + 1, current + 1 + len(events)))
            for i, (event, version) in enumerate(zip(events, versions)):   # in index order
                puts[lay.event(stream, version)] = encode_event(
                    stream, version, i, event.type, event.data, event.metadata, event.id, now)
                puts[lay.event_id(event.id)] = [stream, version]
            runs = values.get(lay.stream(stream))
            puts[lay.stream(stream)] = [[runs[0][0] if runs else 0, versions[-1]]]
            return Plan(puts, lambda rev: AppendResult(
                [position(rev, i) for i in range(len(events))], versions, rev))

        with self.locks.holding([stream]):
            return commit(self.backend, keys, decide, timeout=self.timeout,
                          rejections=(EventStreamError,))

    def _replayed(self, stream: str, ids: list[str], stored: list[list[Any]]) -> AppendResult:
        """The original result of an append whose ids are stored, or DuplicateEventIdError."""
        events = self.read_keys(self.layout.event(s, v) for s, v in stored)
        positions = [e.position for e in events]
        if len(events) != len(ids) or any(e.stream != stream for e in events) or \
                positions != list(range(positions[0], positions[0] + len(positions))):
            raise DuplicateEventIdError([e.id for e in events if e.id is not None] or ids)
        return AppendResult(positions, [e.version for e in events], events[0].revision,
                            replayed=True)

    # -- reads ----------------------------------------------------------------------------------
    def stream_version(self, stream: str, *, linearizable: bool = True) -> int:
        """The stream's last version (-1 when it has no event)."""
        key = self.layout.stream(stream)
        return last_version(self.backend.read([key], linearizable=linearizable).get(key))

    def head(self, *, linearizable: bool = True) -> int:
        """The last global position (0 when no event was appended)."""
        if linearizable:
            self.backend.read([], linearizable=True)
        return self.backend.index.last(self.layout.event_prefix)

    def read_stream(self, stream: str, from_version: int | None = None, *,
                    backwards: bool = False, limit: int | None = None,
                    linearizable: bool = True) -> list[RecordedEvent]:
        """The stream's events from ``from_version`` (inclusive), oldest first.

        ``backwards``: newest first, from ``from_version`` (None: the last) down. A stream
        that does not exist reads as empty. ``linearizable`` (default) sees every append
        acknowledged before the call.
        """
        key = self.layout.stream(stream)
        versions = iter_versions(self.backend.read([key], linearizable=linearizable).get(key))
        if backwards:
            versions = [v for v in reversed(versions) if from_version is None or v <= from_version]
        else:
            versions = [v for v in versions if v >= (from_version or 0)]
        if limit is not None:
            versions = versions[:max(0, limit)]
        return self.read_keys(self.layout.event(stream, v) for v in versions)

    def read_keys(self, keys: Iterable[str]) -> list[RecordedEvent]:
        """The events at event ``keys`` on this replica, in that order (absent ones left out)."""
        keys = list(keys)
        records = self.backend.records(keys)
        return [decode_event(*records[k]) for k in keys if k in records]

    def read_all(self, from_position: int = 1, *, limit: int | None = None,
                 filter: Filter | None = None, linearizable: bool = True,
                 to_position: int | None = None) -> list[RecordedEvent]:
        """Events of every stream from ``from_position`` (inclusive) in global order.

        ``filter`` (e.g. :class:`~hastate.events.records.EventFilter`) keeps the events it
        returns True for; ``limit`` counts the events returned; ``to_position`` (inclusive)
        bounds the scan (default: the last event at the call).
        """
        if linearizable:
            self.backend.read([], linearizable=True)
        out: list[RecordedEvent] = []
        for event in self.scan(from_position - 1, to_position):
            if filter is None or filter(event):
                out.append(event)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def scan(self, after: int, to_position: int | None = None) -> Iterator[RecordedEvent]:
        """Events after position ``after`` up to ``to_position`` (None: the last one when a
        page is read), in global order, read page by page from this replica."""
        prefix = self.layout.event_prefix
        while True:
            entries, _ = self.backend.index.after(prefix, after, PAGE)
            if to_position is not None:
                entries = [e for e in entries if e[0] <= to_position]
            if not entries:
                return
            yield from self.read_keys(k for _, k in entries)
            after = entries[-1][0]

    # -- subscriptions --------------------------------------------------------------------------
    def subscribe(self, after: int = 0, *, filter: Filter | None = None) -> CatchUpSubscription:
        """Events after position ``after`` (a checkpoint), then live ones: no gap, no repeat.

        Iterate it; ``stop()`` ends it. Keep the last delivered ``position`` as your
        checkpoint and pass it back after a restart.
        """
        return CatchUpSubscription(self, after, filter)

    def subscribe_stream(self, stream: str, after_version: int = -1) -> CatchUpSubscription:
        """Events of ``stream`` with versions after ``after_version``, then live ones."""
        after = self.head(linearizable=False)
        # read after the head: an event absent now is appended later, after the head
        found = self.read_keys([self.layout.event(stream, after_version + 1)])
        if found and found[0].position <= after:
            after = found[0].position - 1
        return self.subscribe(after, filter=lambda e: e.stream == stream and
                              e.version > after_version)


def _check_append(stream: str, events: Sequence[NewEvent], expected: int | str) -> None:
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream names are non-empty str, got {stream!r}")
    if not events:
        raise ValueError("append needs at least one event")
    if len(events) > MAX_APPEND:
        raise ValueError(f"append of {len(events)} events, more than {MAX_APPEND}; split it")
    for event in events:
        if not isinstance(event, NewEvent):
            raise TypeError(f"append takes NewEvent items, got {event!r}")
        if not isinstance(event.type, str) or not event.type:
            raise ValueError(f"event types are non-empty str, got {event.type!r}")
        if not isinstance(event.id, str) or not event.id:
            raise ValueError(f"event ids are non-empty str, got {event.id!r}")
    ids = [e.id for e in events]
    if len(set(ids)) != len(ids):
        raise ValueError("an append has the same event id twice; ids must be unique")
    if isinstance(expected, bool) or not (expected in EXPECTED_KINDS or
                                          (isinstance(expected, int) and expected >= 0)):
        raise ValueError(f"expected_version must be ANY, NO_STREAM, STREAM_EXISTS or an int "
                         f">= 0, got {expected!r}")


def _version_ok(expected: int | str, current: int) -> bool:
    if expected == ANY:
        return True
    if expected == NO_STREAM:
        return current == -1
    if expected == STREAM_EXISTS:
        return current >= 0
    return current == expected
