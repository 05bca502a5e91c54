"""Retention: truncate a stream's old events, archiving them first as verifiable segments.

``truncate(streams, stream, before_version, archive)`` removes the stream's events with
versions below ``before_version`` (``truncate_older_than`` finds that version from the
events' recorded times). Work goes in chunks of :data:`CHUNK` events, each first written to
the snapshot store as one segment, then removed by one transaction that compares the
stream's versions (so a concurrent truncation or append in between cannot be lost). A
segment is a JSON header line (namespace, stream, first and last version, count, SHA-256
of the body) and the events in the state codec (Decimal and datetime exact);
:meth:`EventArchive.read_segment` checks all of it. After truncation the stream reads from
``before_version``, its positions in ``$all`` read as absent, and its ids are forgotten
(a retry of a truncated append would append again: truncate only what no writer retries).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from hastate.errors import CorruptDataError, EventStreamError, SnapshotNotFoundError
from hastate.events.backend import Plan, commit
from hastate.events.records import RecordedEvent, iter_versions
from hastate.events.streams import EventStreams
from hastate.snapshots.store import SnapshotStore
from hastate.state.codec import decode_value, encode_value

logger = logging.getLogger(__name__)

#: Events archived and removed per segment and transaction (2 deletes each).
CHUNK = 300
SEGMENT_FORMAT = 1


@dataclass(frozen=True)
class Truncated:
    """What a truncation did: events removed, segments written, the stream's new first version."""

    removed: int
    segments: list[str]
    first_version: int


class EventArchive:
    """Segments of truncated events in a snapshot store, under ``prefix``."""

    def __init__(self, store: SnapshotStore, prefix: str = "events") -> None:
        self.store = store
        self.prefix = prefix

    def _name(self, namespace: str, stream: str, first: int, last: int) -> str:
        return f"{self.prefix}/{namespace}/{stream}/{first:012d}-{last:012d}.seg"

    def write_segment(self, namespace: str, events: list[RecordedEvent]) -> str:
        """Store ``events`` (one stream, contiguous versions) as one segment; its name."""
        stream, first, last = events[0].stream, events[0].version, events[-1].version
        body = encode_value("segment", [asdict(e) for e in events])
        header = {"format": SEGMENT_FORMAT, "namespace": namespace, "stream": stream,
                  "first_version": first, "last_version": last, "count": len(events),
                  "sha256": hashlib.sha256(body).hexdigest()}
        name = self._name(namespace, stream, first, last)
        self.store.write(name, json.dumps(header).encode() + b"\n" + body)
        return name

    def segments(self, namespace: str, stream: str) -> list[str]:
        """Names of the stream's segments, oldest first."""
        return [o.name for o in self.store.list(f"{self.prefix}/{namespace}/{stream}/")
                if o.name.endswith(".seg")]

    def read_segment(self, name: str) -> list[RecordedEvent]:
        """The events of segment ``name``, verified.

        :raises CorruptDataError: the body does not match its checksum, or the events do not
            match the header (stream, contiguous versions first..last, count).
        """
        raw = self.store.read(name)
        head, _, body = raw.partition(b"\n")
        try:
            header = json.loads(head)
        except ValueError:
            raise CorruptDataError(f"segment {name} has no JSON header line") from None
        if hashlib.sha256(body).hexdigest() != header.get("sha256"):
            raise CorruptDataError(f"segment {name} fails its SHA-256: the object was changed "
                                   "or cut short; restore it from another copy of the store")
        events = [RecordedEvent(**e) for e in decode_value(body)]
        want = list(range(header["first_version"], header["last_version"] + 1))
        if [e.version for e in events] != want or len(events) != header["count"] or \
                any(e.stream != header["stream"] for e in events):
            raise CorruptDataError(f"segment {name}: its events do not match its header")
        return events


def truncate(streams: EventStreams, stream: str, before_version: int,
             archive: EventArchive | None) -> Truncated:
    """Remove ``stream``'s events with versions below ``before_version`` (archived first).

    ``archive=None`` drops them without a copy (say so explicitly).
    """
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream names are non-empty str, got {stream!r}")
    if isinstance(before_version, bool) or not isinstance(before_version, int) or \
            before_version < 0:
        raise ValueError(f"before_version must be an int >= 0, got {before_version!r}")
    lay = streams.layout
    removed, names = 0, []
    while True:
        old = streams.read_stream(stream, 0, limit=CHUNK)
        chunk = [e for e in old if e.version < before_version]
        if not chunk:
            break
        if archive is not None:
            names.append(archive.write_segment(lay.namespace, chunk))
        cut = chunk[-1].version + 1

        def decide(values: dict[str, Any], chunk: list[RecordedEvent] = chunk,
                   cut: int = cut) -> Plan[int]:
            versions = iter_versions(values.get(lay.stream(stream)))
            if not versions or versions[0] != chunk[0].version:
                raise EventStreamError(f"stream {stream!r} changed its first version while "
                                       "being truncated; truncate again")
            deletes = [k for e in chunk for k in
                       (lay.event(stream, e.version),
                        *((lay.event_id(e.id),) if e.id is not None else ()))]
            return Plan({lay.stream(stream): [[cut, versions[-1]]]}, lambda _rev: len(chunk),
                        deletes)

        removed += commit(streams.backend, [lay.stream(stream)], decide,
                          rejections=(EventStreamError,), timeout=streams.timeout)
    runs = streams.backend.read([lay.stream(stream)], linearizable=False).get(lay.stream(stream))
    first = runs[0][0] if runs else 0
    logger.info("stream truncated", extra={"stream": stream, "removed": removed,
                                           "segments": len(names)})
    return Truncated(removed, names, first)


def truncate_older_than(streams: EventStreams, stream: str, cutoff: float,
                        archive: EventArchive | None) -> Truncated:
    """Truncate ``stream`` before its first event recorded at or after ``cutoff`` (Unix s)."""
    events = streams.read_stream(stream)
    keep = next((e.version for e in events if (e.recorded_at or 0) >= cutoff),
                streams.stream_version(stream) + 1)
    return truncate(streams, stream, keep, archive)


def archived_events(archive: EventArchive, namespace: str, stream: str) -> list[RecordedEvent]:
    """Every archived event of ``stream``, verified, oldest first."""
    try:
        return [e for name in archive.segments(namespace, stream)
                for e in archive.read_segment(name)]
    except SnapshotNotFoundError as exc:
        raise CorruptDataError(f"a segment of {stream!r} vanished while read: {exc}") from None
