"""Event streams on hastate: atomic, idempotent appends with expected versions, and reads.

Example::

    from hastate.events import NewEvent, NO_STREAM
    result = sm.events.append("position-BTC", [NewEvent("OrderFilled", {"qty": Decimal("2")},
                              {"correlation_id": order_id})], expected_version=NO_STREAM)
    for event in sm.events.read_stream("position-BTC"):
        ...

Semantics (EventStoreDB's): stream versions count from 0 without gaps; every event also
gets a global position, a gapless int from 1 over all streams of the namespace (also the
``eventsourcing`` library's notification id). One append is ONE hastate transaction:
all its events or none, compared against the stream's version, the namespace head and
every event id. Appending ids that are already stored as exactly this append (a retry
after an unknown outcome, even via another node) returns the original positions.

The head is a single key, so concurrent appends (even to different streams) serialize:
the loser's transaction fails and it retries with the values the failure returned. Appends
from one process are serialized locally first, so only other processes race.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable, Sequence

from hastate.errors import DuplicateEventIdError, EventStreamError, WrongExpectedVersionError
from hastate.events.backend import Backend, Plan, commit
from hastate.events.records import (ANY, EXPECTED_KINDS, NO_STREAM, STREAM_EXISTS,
                                    AppendResult, Filter, Layout, NewEvent, RecordedEvent,
                                    decode_event, encode_event, iter_versions, last_version)
from hastate.events.subscription import CatchUpSubscription

#: Events per append (one transaction): 3 keys each, well within the byte cap for small events.
MAX_APPEND = 1000
#: Position keys read per round when scanning ``$all``.
PAGE = 256


class EventStreams:
    """Streams of one namespace on one backend (``sm.events`` is the default namespace)."""

    def __init__(self, backend: Backend, namespace: str = "events", *,
                 timeout: float = 30.0) -> None:
        self.backend = backend
        self.layout = Layout(namespace)
        self.timeout = timeout
        self._append_lock = threading.Lock()

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
        keys = [lay.head, lay.stream(stream), *(lay.event_id(i) for i in ids)]

        def decide(values: dict[str, Any]) -> Plan[AppendResult]:
            stored = [values[lay.event_id(i)] for i in ids if lay.event_id(i) in values]
            if stored:
                return Plan({}, lambda _rev: self._replayed(stream, ids, stored))
            current = last_version(values.get(lay.stream(stream)))
            if not _version_ok(expected_version, current):
                raise WrongExpectedVersionError(stream, expected_version, current)
            head = values.get(lay.head, 0)
            now = time.time()
            puts: dict[str, Any] = {}
            positions = list(range(head + 1, head + 1 + len(events)))
            versions = list(range(current + 1, current + 1 + len(events)))
            for event, position, version in zip(events, positions, versions):
                puts[lay.position(position)] = encode_event(stream, version, event.type,
                                                            event.data, event.metadata,
                                                            event.id, now)
                puts[lay.version(stream, version)] = position
                puts[lay.event_id(event.id)] = position
            runs = values.get(lay.stream(stream))
            puts[lay.stream(stream)] = [[runs[0][0] if runs else 0, versions[-1]]]
            puts[lay.head] = positions[-1]
            return Plan(puts, lambda rev: AppendResult(positions, versions, rev))

        with self._append_lock:
            return commit(self.backend, keys, decide, timeout=self.timeout,
                          rejections=(EventStreamError,))

    def _replayed(self, stream: str, ids: list[str], stored: list[int]) -> AppendResult:
        """The original result of an append whose ids are stored, or DuplicateEventIdError."""
        keys = [self.layout.position(p) for p in stored]
        records = self.backend.read(keys, linearizable=False)
        events = [decode_event(p, records[k]) for p, k in zip(stored, keys)]
        if len(stored) != len(ids) or any(e.stream != stream for e in events) or \
                stored != list(range(stored[0], stored[0] + len(stored))):
            raise DuplicateEventIdError([e.id for e in events if e.id is not None])
        revision = self.backend.mod_revisions(keys[:1]).get(keys[0], 0)
        return AppendResult(stored, [e.version for e in events], revision, replayed=True)

    # -- reads ----------------------------------------------------------------------------------
    def stream_version(self, stream: str, *, linearizable: bool = True) -> int:
        """The stream's last version (-1 when it has no event)."""
        key = self.layout.stream(stream)
        return last_version(self.backend.read([key], linearizable=linearizable).get(key))

    def head(self, *, linearizable: bool = True) -> int:
        """The last global position (0 when no event was appended)."""
        key = self.layout.head
        return int(self.backend.read([key], linearizable=linearizable).get(key, 0))

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
        index_keys = [self.layout.version(stream, v) for v in versions]
        positions = self.backend.read(index_keys, linearizable=False)
        return self.read_positions([positions[k] for k in index_keys])

    def read_positions(self, positions: Iterable[int]) -> list[RecordedEvent]:
        """The events at ``positions`` on this replica (truncated ones are left out)."""
        positions = list(positions)
        keys = [self.layout.position(p) for p in positions]
        records = self.backend.read(keys, linearizable=False)
        return [decode_event(p, records[k]) for p, k in zip(positions, keys) if k in records]

    def read_all(self, from_position: int = 1, *, limit: int | None = None,
                 filter: Filter | None = None, linearizable: bool = True,
                 to_position: int | None = None) -> list[RecordedEvent]:
        """Events of every stream from ``from_position`` (inclusive) in global order.

        ``filter`` (e.g. :class:`~hastate.events.records.EventFilter`) keeps the events it
        returns True for; ``limit`` counts the events returned; ``to_position`` (inclusive)
        bounds the scan (default: the head at the call).
        """
        end = self.head(linearizable=linearizable) if to_position is None else to_position
        out: list[RecordedEvent] = []
        position = max(1, from_position)
        while position <= end and (limit is None or len(out) < limit):
            page = self.read_positions(range(position, min(end, position + PAGE - 1) + 1))
            for event in page:
                if filter is None or filter(event):
                    out.append(event)
                    if limit is not None and len(out) >= limit:
                        break
            position += PAGE
        return out

    # -- subscriptions --------------------------------------------------------------------------
    def subscribe(self, after: int = 0, *, filter: Filter | None = None) -> CatchUpSubscription:
        """Events after position ``after`` (a checkpoint), then live ones: no gap, no repeat.

        Iterate it; ``stop()`` ends it. Keep the last delivered ``position`` as your
        checkpoint and pass it back after a restart.
        """
        return CatchUpSubscription(self, after, filter)

    def subscribe_stream(self, stream: str, after_version: int = -1) -> CatchUpSubscription:
        """Events of ``stream`` with versions after ``after_version``, then live ones."""
        lay = self.layout
        values, _ = self.backend.read_at([lay.head, lay.version(stream, after_version + 1)])
        start = values.get(lay.version(stream, after_version + 1))
        after = start - 1 if start is not None else values.get(lay.head, 0)
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
