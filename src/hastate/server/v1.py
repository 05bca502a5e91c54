"""``/v1`` HTTP API for non-Python consumers: watch as Server-Sent Events, transactions as JSON.

Both need ``Authorization: Bearer <token>`` (the node's admin token).

* ``GET /v1/watch?prefix=P&start_revision=R&prev_value=1&progress_interval=S``: an event
  stream of this replica's changes (``text/event-stream``). Each change is
  ``id: <revision>`` / ``event: put|delete`` / ``data: {"key", "value", "revision",
  "create_revision", "version", "prev_value"}``; after ``progress_interval`` seconds of quiet
  (default 10) an ``event: progress`` whose id promises every later event is newer. A
  reconnecting client sends ``Last-Event-ID`` (or ``start_revision`` = last id + 1) and
  misses nothing. A watch that ends (slow consumer, node stopping, dump installed) ends with
  ``event: error`` / ``data: {"error", "type", "next_revision"}``. A start older than the
  node holds is ``410 {"error", "oldest_revision"}``.
* ``POST /v1/txn`` with ``{"compare": [{"key", "target", "operator", "value"}], "success":
  [{"op", "key", "value"}], "failure": [...]}`` (targets ``value``, ``version``,
  ``create_revision``, ``mod_revision``; operators ``=``, ``!=``, ``<``, ``>``; ops ``put``,
  ``delete``, ``delete_prefix``, ``get``, ``get_prefix``): ``200 {"succeeded", "revision",
  "responses"}``; ``400`` for a malformed or over-limit transaction (nothing proposed); ``503``
  when not confirmed in time, with ``outcome_unknown``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, BinaryIO

from hastate.errors import (CompactedError, TxnError, WatchError, WatchOverflowError,
                            WriteError)
from hastate.state import txn as txn_mod
from hastate.server.routes import Handler, Reply, Request, Served
from hastate.state.txn import KeyValue

#: Seconds of quiet before a progress event (also keeps idle connections checked).
DEFAULT_PROGRESS_INTERVAL = 10.0


class BadRequest(ValueError):
    """A request the client must fix; the message says what."""


def watch(server: Served, request: Request) -> Reply:
    """``GET /v1/watch``: this replica's changes as Server-Sent Events."""
    try:
        args = _watch_args(request.query, request.headers.get("last-event-id"))
    except BadRequest as exc:
        return Reply(400, {"error": str(exc)})
    try:
        watcher = server.manager.watch(args["prefix"], args["start_revision"],
                                       prev_value=args["prev_value"],
                                       progress_notify=args["progress_interval"])
    except CompactedError as exc:
        return Reply(410, {"error": str(exc), "oldest_revision": exc.oldest_revision})
    except WatchError as exc:
        return Reply(503, {"error": str(exc)})
    return Reply(200, None, "text/event-stream", stream=lambda out: _stream(out, watcher))


def _watch_args(query: dict[str, str], last_event_id: str | None) -> dict[str, Any]:
    def number(name: str, text: str | None, kind: type) -> Any:
        if text is None:
            return None
        try:
            return kind(text)
        except ValueError:
            raise BadRequest(f"{name} must be a number, got {text!r}") from None

    start = number("start_revision", query.get("start_revision"), int)
    if start is None and last_event_id:
        start = number("Last-Event-ID", last_event_id, int) + 1
    interval = number("progress_interval", query.get("progress_interval"), float)
    if interval is not None and not interval > 0:
        raise BadRequest(f"progress_interval must be > 0 seconds, got {interval}")
    if start is not None and start < 1:
        raise BadRequest(f"start_revision must be >= 1, got {start}")
    return {"prefix": query.get("prefix") or "", "start_revision": start,
            "prev_value": (query.get("prev_value") or "").lower() in ("1", "true", "yes"),
            "progress_interval": interval or DEFAULT_PROGRESS_INTERVAL}


def _stream(out: BinaryIO, watcher: Any) -> None:
    try:
        while True:
            try:
                event = watcher.get()
            except WatchError as exc:
                next_revision = exc.next_revision if isinstance(exc, WatchOverflowError) \
                    else watcher.delivered_revision + 1
                _send(out, "error", None, {"error": str(exc), "type": type(exc).__name__,
                                           "next_revision": next_revision})
                return
            if event is None:
                continue
            data = {"revision": event.revision} if event.type == "progress" else {
                "key": event.key, "value": event.value, "revision": event.revision,
                "create_revision": event.create_revision, "version": event.version,
                "prev_value": event.prev_value}
            _send(out, event.type, event.revision, data)
    finally:
        watcher.cancel()


def _send(out: BinaryIO, kind: str, event_id: int | None, data: dict[str, Any]) -> None:
    lines = ([f"id: {event_id}"] if event_id is not None else []) + \
        [f"event: {kind}", f"data: {json.dumps(data, default=str)}", "", ""]
    out.write("\n".join(lines).encode())
    out.flush()


def txn(server: Served, request: Request) -> Reply:
    """``POST /v1/txn``: one transaction from its JSON form."""
    try:
        compare, success, failure = parse_txn(request.body)
        result = server.manager.transaction(compare, success, failure)
    except (BadRequest, TxnError) as exc:
        return Reply(400, {"error": str(exc)})
    except WriteError as exc:
        return Reply(503, {"error": str(exc), "outcome_unknown": exc.outcome_unknown})
    return Reply(200, {"succeeded": result.succeeded, "revision": result.revision,
                       "responses": [_response(r) for r in result.responses]})


def parse_txn(body: dict[str, Any]) -> tuple[list[txn_mod.Compare], list[txn_mod.Op],
                                              list[txn_mod.Op]]:
    """The compares and branches of a JSON transaction body; BadRequest naming the fault."""
    unknown = set(body) - {"compare", "success", "failure"}
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}; a transaction has compare, "
                         "success and failure")
    parts: list[list[Any]] = []
    for name in ("compare", "success", "failure"):
        items = body.get(name, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BadRequest(f"{name} must be a list of objects")
        parts.append(items)
    compares = [txn_mod.Compare(c.get("key"), c.get("target"), c.get("operator"),
                                c.get("value")) for c in parts[0]]
    branches = []
    for name, items in zip(("success", "failure"), parts[1:]):
        ops = []
        for op in items:
            kind = op.get("op")
            if kind not in txn_mod.OP_KINDS:
                raise BadRequest(f"{name}: op {kind!r} is not one of {txn_mod.OP_KINDS}")
            key = op.get("prefix", op.get("key")) if kind.endswith("_prefix") else op.get("key")
            ops.append(txn_mod.Op(kind, key, op.get("value"), op.get("lease", 0)))
        branches.append(ops)
    return compares, branches[0], branches[1]


def _response(response: Any) -> Any:
    if isinstance(response, KeyValue):
        return asdict(response)
    if isinstance(response, list):
        return [asdict(r) for r in response]
    return response


ROUTES: dict[tuple[str, str], tuple[Handler, bool]] = {
    ("GET", "/v1/watch"): (watch, True),
    ("POST", "/v1/txn"): (txn, True),
}
