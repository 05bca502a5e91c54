"""``/v1/events`` HTTP API: read streams and ``$all`` as JSON, follow ``$all`` live as SSE.

Both need ``Authorization: Bearer <token>`` (the node's admin token); namespace ``events``
(``sm.events``) unless ``namespace=`` says otherwise.

* ``GET /v1/events/read?stream=S&from_version=V&backwards=1&limit=N``: a stream's events;
  without ``stream``, ``$all`` from ``from_position`` (inclusive, default 1) with optional
  ``stream_prefix`` and ``types`` (comma-separated) filters and ``limit`` (default 1000).
  ``200 {"events": [...], "head": H}``.
* ``POST /v1/events/append`` with ``{"stream", "events": [{"type", "data", "metadata",
  "id"}], "expected_version": "any"|"no_stream"|"stream_exists"|N}``: ``200 {"positions",
  "versions", "revision", "replayed"}``; ``409 {"error", "actual_version"}`` for a wrong
  expected version, ``409 {"error", "event_ids"}`` for ids stored by another append; ``400``
  for a malformed append; ``503`` with ``outcome_unknown`` when not confirmed in time
  (retry with the same ids: the retry is idempotent).
* ``POST /v1/events/truncate`` with ``{"stream", "before_version": V}`` or ``{"stream",
  "older_than": seconds}``, and ``"archive": false`` to drop the events without a copy
  (default: archive them first as segments in the node's ``[snapshots] store``):
  ``200 {"removed", "segments", "first_version"}``; ``409`` when archiving is asked for
  but the node has no snapshot store.
* ``GET /v1/events/all?after=P&stream_prefix=&types=``: ``$all`` after position ``P`` (or
  ``Last-Event-ID``), replayed then live, as Server-Sent Events: ``id: <position>`` /
  ``event: <type>`` / ``data: <event JSON>``; a reconnecting client misses nothing.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import asdict
from typing import Any, BinaryIO

from hastate.errors import (DuplicateEventIdError, TxnError, WriteError,
                            WrongExpectedVersionError)
from hastate.events import EventFilter, EventStreams, ManagerBackend, NewEvent
from hastate.events.records import RecordedEvent
from hastate.events.retention import EventArchive, truncate, truncate_older_than
from hastate.server.routes import Reply, Request, Served

#: Events a read returns unless ``limit`` says otherwise.
DEFAULT_LIMIT = 1000
#: Seconds of quiet on ``/v1/events/all`` before a keep-alive comment.
KEEPALIVE = 10.0


class BadRequest(ValueError):
    """A request the client must fix; the message says what."""


def _int(query: dict[str, str], name: str, default: int | None) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {text!r}") from None


def _streams(server: Served, query: dict[str, str]) -> EventStreams:
    namespace = query.get("namespace")
    return server.manager.events if not namespace else \
        EventStreams(ManagerBackend(server.manager), namespace)


def _filter(query: dict[str, str]) -> EventFilter | None:
    prefix = query.get("stream_prefix") or None
    types = frozenset(t for t in (query.get("types") or "").split(",") if t) or None
    return EventFilter(prefix, types) if prefix or types else None


def event_json(event: RecordedEvent) -> dict[str, Any]:
    """An event as JSON-able data (Decimal and datetime as strings)."""
    return json.loads(json.dumps(asdict(event), default=str))


def read(server: Served, request: Request) -> Reply:
    """``GET /v1/events/read``: a stream, or ``$all``, as JSON."""
    query = request.query
    try:
        streams = _streams(server, query)
        limit = _int(query, "limit", DEFAULT_LIMIT)
        if query.get("stream"):
            backwards = (query.get("backwards") or "").lower() in ("1", "true", "yes")
            events = streams.read_stream(query["stream"], _int(query, "from_version", None),
                                         backwards=backwards, limit=limit)
        else:
            events = streams.read_all(_int(query, "from_position", 1) or 1, limit=limit,
                                      filter=_filter(query))
    except (BadRequest, ValueError) as exc:
        return Reply(400, {"error": str(exc)})
    return Reply(200, {"events": [event_json(e) for e in events],
                       "head": streams.head(linearizable=False)})


def _new_events(items: Any) -> list[NewEvent]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest("events must be a list of objects with type, data, metadata, id")
    out = []
    for item in items:
        unknown = set(item) - {"type", "data", "metadata", "id"}
        if unknown:
            raise BadRequest(f"unknown event fields {sorted(unknown)}; an event has type, "
                             "data, metadata and id")
        fields = {k: item[k] for k in ("type", "data", "metadata", "id") if k in item}
        out.append(NewEvent(**fields))
    return out


def append(server: Served, request: Request) -> Reply:
    """``POST /v1/events/append``: one atomic, idempotent append."""
    body = request.body
    try:
        unknown = set(body) - {"stream", "events", "expected_version"}
        if unknown:
            raise BadRequest(f"unknown fields {sorted(unknown)}; an append has stream, "
                             "events and expected_version")
        result = _streams(server, request.query).append(
            body.get("stream"), _new_events(body.get("events")),
            body.get("expected_version", "any"))
    except WrongExpectedVersionError as exc:
        return Reply(409, {"error": str(exc), "actual_version": exc.actual_version})
    except DuplicateEventIdError as exc:
        return Reply(409, {"error": str(exc), "event_ids": exc.event_ids})
    except WriteError as exc:
        return Reply(503, {"error": str(exc), "outcome_unknown": exc.outcome_unknown})
    except (BadRequest, ValueError, TypeError, TxnError) as exc:
        return Reply(400, {"error": str(exc)})
    return Reply(200, {"positions": result.positions, "versions": result.versions,
                       "revision": result.revision, "replayed": result.replayed})


def truncate_stream(server: Served, request: Request) -> Reply:
    """``POST /v1/events/truncate``: retention for one stream (archived first by default)."""
    body = request.body
    unknown = set(body) - {"stream", "before_version", "older_than", "archive"}
    if unknown:
        return Reply(400, {"error": f"unknown fields {sorted(unknown)}; a truncation has "
                           "stream, before_version or older_than, and archive"})
    archive = None
    if body.get("archive", True):
        snapshots = getattr(server.manager.engine, "snapshots", None)
        if snapshots is None:
            return Reply(409, {"error": "this node has no [snapshots] store to archive to; "
                               "configure one, or send archive: false to drop the events "
                               "without a copy"})
        archive = EventArchive(snapshots.store)
    streams = _streams(server, request.query)
    try:
        if ("before_version" in body) == ("older_than" in body):
            raise BadRequest("give exactly one of before_version (a version) and older_than "
                             "(seconds)")
        if "older_than" in body:
            age = body["older_than"]
            if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
                raise BadRequest(f"older_than must be seconds >= 0, got {age!r}")
            done = truncate_older_than(streams, body.get("stream"), time.time() - age, archive)
        else:
            done = truncate(streams, body.get("stream"), body["before_version"], archive)
    except (BadRequest, ValueError) as exc:
        return Reply(400, {"error": str(exc)})
    except WriteError as exc:
        return Reply(503, {"error": str(exc), "outcome_unknown": exc.outcome_unknown})
    return Reply(200, {"removed": done.removed, "segments": done.segments,
                       "first_version": done.first_version})


def follow_all(server: Served, request: Request) -> Reply:
    """``GET /v1/events/all``: ``$all`` after a position, replayed then live, as SSE."""
    query = request.query
    try:
        after = _int(query, "after", None)
        if after is None:
            after = _int({"Last-Event-ID": request.headers.get("last-event-id", "")},
                         "Last-Event-ID", 0)
        if after is None or after < 0:
            raise BadRequest(f"after must be >= 0, got {after}")
        subscription = _streams(server, query).subscribe(after, filter=_filter(query))
    except (BadRequest, ValueError) as exc:
        return Reply(400, {"error": str(exc)})

    def stream(out: BinaryIO) -> None:
        # The subscription runs on its own thread so this one can send a keep-alive comment
        # while nothing happens: a client that left is noticed then, not at the next event.
        events: queue.Queue[RecordedEvent | None] = queue.Queue(maxsize=1024)

        closed = threading.Event()

        def offer(item: RecordedEvent | None) -> bool:
            while not closed.is_set():
                try:
                    events.put(item, timeout=1.0)
                    return True
                except queue.Full:
                    continue
            return False

        def pump() -> None:
            try:
                for event in subscription:
                    if not offer(event):
                        return
            finally:
                offer(None)

        threading.Thread(target=pump, name="events-sse", daemon=True).start()
        try:
            while True:
                try:
                    event = events.get(timeout=KEEPALIVE)
                except queue.Empty:
                    out.write(b": keep-alive\n\n")
                    out.flush()
                    continue
                if event is None:
                    return
                lines = [f"id: {event.position}", f"event: {event.type}",
                         f"data: {json.dumps(event_json(event))}", "", ""]
                out.write("\n".join(lines).encode())
                out.flush()
        finally:
            closed.set()
            subscription.stop()

    return Reply(200, None, "text/event-stream", stream=stream)


ROUTES = {
    ("GET", "/v1/events/read"): (read, True),
    ("GET", "/v1/events/all"): (follow_all, True),
    ("POST", "/v1/events/append"): (append, True),
    ("POST", "/v1/events/truncate"): (truncate_stream, True),
}
