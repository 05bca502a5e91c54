"""What an event stream stores: new events, recorded events, and where each lives.

Key layout of one namespace ``ns`` (every value in the state codec, so Decimal and
datetime stay exact):

- ``ns/e/<stream>/<version>``: the event at that version of the stream: type, data,
  metadata, id, time recorded, and ``i``, its index in its append. Its ``create_revision``
  is the cluster revision of the append; its global position is that revision
  * :data:`~hastate.events.index.SLOTS` + ``i`` (see :mod:`hastate.events.index`).
- ``ns/s/<stream>``: the stream's versions as runs ``[[first, last], ...]`` (one run
  ``[[t, n]]`` for streams appended through :class:`~hastate.events.streams.EventStreams`,
  ``t`` = 0 until the stream is truncated).
- ``ns/i/<event id>``: ``[stream, version]`` of the event with that id (idempotent appends).
- ``ns/t/<name>``: a tracking record (the last position a projection has applied).

No key is shared by all appends: an append compares only its stream's runs and its ids.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from hastate.events.index import position, revision_of

#: Expected versions (EventStoreDB's): no check, the stream must not exist, must exist.
ANY = "any"
NO_STREAM = "no_stream"
STREAM_EXISTS = "stream_exists"
EXPECTED_KINDS = (ANY, NO_STREAM, STREAM_EXISTS)


@dataclass(frozen=True)
class NewEvent:
    """An event to append: a type name, data (codec values), metadata, a unique id.

    ``metadata`` carries e.g. ``correlation_id`` / ``causation_id``; ``id`` defaults to a
    fresh UUID string: pass your own stable one to make a retried append idempotent.
    """

    type: str
    data: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class RecordedEvent:
    """A stored event: its stream and version (from 0), global position.

    ``position`` grows strictly in commit order over all streams of the namespace, with
    gaps: ``revision * SLOTS + i`` (see :mod:`hastate.events.index`).

    ``recorded_at``: the appending node's wall clock (Unix seconds) when it proposed the
    append; what retention by age compares (None for events stored without it).
    """

    stream: str
    version: int
    position: int
    type: str
    data: Any
    metadata: Mapping[str, Any]
    id: str | None
    recorded_at: float | None = None

    @property
    def revision(self) -> int:
        """The cluster revision of the append that stored this event."""
        return revision_of(self.position)


@dataclass(frozen=True)
class AppendResult:
    """Where an append's events went: global positions, the stream's versions, revision.

    ``revision`` is the cluster revision the append committed at; ``replayed`` is True
    when the append had already been stored (a retry) and these are the original ones.
    """

    positions: list[int]
    versions: list[int]
    revision: int
    replayed: bool = False

    @property
    def next_expected_version(self) -> int:
        """The version to expect on the next append to this stream."""
        return self.versions[-1]


@dataclass(frozen=True)
class EventFilter:
    """Select events of ``$all`` by stream prefix and/or type names (None: any)."""

    stream_prefix: str | None = None
    types: frozenset[str] | None = None

    def __call__(self, event: RecordedEvent) -> bool:
        if self.stream_prefix is not None and not event.stream.startswith(self.stream_prefix):
            return False
        return self.types is None or event.type in self.types


Filter = Callable[[RecordedEvent], bool]


class Layout:
    """The keys of one namespace (see the module docstring)."""

    def __init__(self, namespace: str) -> None:
        if not isinstance(namespace, str) or not namespace or namespace.endswith("/"):
            raise ValueError(f"event namespace must be a non-empty str not ending in '/', "
                             f"got {namespace!r}")
        self.namespace = namespace
        self.event_prefix = f"{namespace}/e/"

    def event(self, stream: str, version: int) -> str:
        return f"{self.event_prefix}{stream}/{version}"

    def stream(self, stream: str) -> str:
        return f"{self.namespace}/s/{stream}"

    def event_id(self, event_id: str) -> str:
        return f"{self.namespace}/i/{event_id}"

    def tracking(self, name: str) -> str:
        return f"{self.namespace}/t/{name}"


def encode_event(stream: str, version: int, index: int, event_type: str, data: Any,
                 metadata: Mapping[str, Any], event_id: str | None,
                 recorded_at: float) -> dict[str, Any]:
    """The value stored at an event's key; ``index``: its place in its append."""
    return {"s": stream, "v": version, "i": index, "t": event_type, "d": data,
            "m": dict(metadata), "id": event_id, "at": recorded_at}


def decode_event(value: Mapping[str, Any], create_revision: int) -> RecordedEvent:
    """A :class:`RecordedEvent` from an event key's value and create_revision."""
    return RecordedEvent(stream=value["s"], version=value["v"],
                         position=position(create_revision, value["i"]), type=value["t"],
                         data=value["d"], metadata=value["m"], id=value["id"],
                         recorded_at=value.get("at"))


def last_version(runs: list[list[int]] | None) -> int:
    """A stream's last version from its runs (-1 when it has no event)."""
    return runs[-1][1] if runs else -1


def add_versions(runs: list[list[int]] | None, versions: list[int]) -> list[list[int]]:
    """``runs`` with ``versions`` (sorted, none present) merged in, runs kept minimal."""
    merged: list[list[int]] = [list(r) for r in (runs or [])]
    for v in versions:
        merged.append([v, v])
    merged.sort()
    out: list[list[int]] = []
    for lo, hi in merged:
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def has_version(runs: list[list[int]] | None, version: int) -> bool:
    """Is ``version`` among the stream's versions?"""
    return any(lo <= version <= hi for lo, hi in (runs or []))


def iter_versions(runs: list[list[int]] | None) -> list[int]:
    """Every version of the stream, ascending."""
    return [v for lo, hi in (runs or []) for v in range(lo, hi + 1)]
