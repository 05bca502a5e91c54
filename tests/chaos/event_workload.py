"""The event-stream workload of a chaos campaign, node side: appends and two recorders.

``node_main.py`` serves :data:`POST_ROUTES` / :data:`GET_ROUTES` and, with ``--events-out``,
runs :func:`record_subscription`:

  POST /events-append  ``{"stream", "expected_version", "events": [{"type", "data", "id"}]}``
                       (the body of :func:`hastate.testing.event_checks.writer_append`) ->
                       ``ok`` with positions and versions, ``fail`` (certainly not applied:
                       wrong expected version, with ``actual_version``) or ``unknown``
  GET  /events-all     this replica's ``$all``, read locally: ``{"events": [[position,
                       stream, version, id], ...]}`` (the orchestrator compares the nodes)

:func:`record_subscription` writes every event a catch-up subscription on this node
delivers, one ``[position, stream, version, id]`` JSON line each, from position 0; after a
restart it resumes after the last complete line, as a projection resumes from its
checkpoint. ``bug="resume-from-head"`` (negative control) resumes from the cluster's head
instead, the classic mistake that loses what was appended while the subscriber was down.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from hastate import StateManager
from hastate.errors import HAStateError, WrongExpectedVersionError, WriteError
from hastate.events import NewEvent

log = logging.getLogger("chaos.events")

#: The recorder's bugs, for negative controls.
BUGS = ("resume-from-head",)


def append(sm: StateManager, body: dict[str, Any]) -> dict[str, Any]:
    """One append; ``fail`` only when it certainly did not apply."""
    events = [NewEvent(e["type"], e.get("data"), id=e["id"]) for e in body["events"]]
    try:
        result = sm.events.append(body["stream"], events, body["expected_version"])
    except WrongExpectedVersionError as exc:
        return {"result": "fail", "error": str(exc), "actual_version": exc.actual_version}
    except WriteError as exc:
        return {"result": "unknown" if exc.outcome_unknown else "fail", "error": str(exc)}
    return {"result": "ok", "positions": result.positions, "versions": result.versions,
            "replayed": result.replayed}


def all_events(sm: StateManager, _query: dict[str, Any]) -> dict[str, Any]:
    """This replica's ``$all`` (local read: compare nodes after they converged)."""
    return {"events": [[e.position, e.stream, e.version, e.id]
                       for e in sm.events.read_all(linearizable=False)]}


POST_ROUTES: dict[str, Callable[[StateManager, dict[str, Any]], dict[str, Any]]] = {
    "/events-append": append}
GET_ROUTES: dict[str, Callable[[StateManager, dict[str, Any]], dict[str, Any]]] = {
    "/events-all": all_events}


def record_subscription(sm: StateManager, path: Path, stop: threading.Event,
                        bug: str | None = None) -> None:
    """Append every event a subscription on this node delivers to ``path`` (see above)."""
    records = load_records(path, cut=True)
    after = records[-1][0] if records else 0
    if records and bug == "resume-from-head":
        after = _head(sm, stop)
    subscription = sm.events.subscribe(after)
    threading.Thread(target=lambda: (stop.wait(), subscription.stop()), daemon=True).start()
    with path.open("a") as out:
        for event in subscription:
            out.write(json.dumps([event.position, event.stream, event.version, event.id])
                      + "\n")
            out.flush()


def _head(sm: StateManager, stop: threading.Event) -> int:
    """The cluster's head, read linearizably (retried until the node can)."""
    while not stop.is_set():
        try:
            return sm.events.head(linearizable=True)
        except HAStateError as exc:
            log.info("head not readable yet: %s", exc)
            time.sleep(0.2)
    return 0


def load_records(path: Path, *, cut: bool = False) -> list[list[Any]]:
    """The complete lines :func:`record_subscription` wrote; ``cut`` (the recorder, before
    it resumes) also removes a torn last line from the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    if cut and complete != data:
        path.write_bytes(complete)
    return [json.loads(line) for line in complete.splitlines()]
