"""The observability endpoints: what monitoring and the CLI read from every node.

* ``GET /healthz``: 200 while the engine runs without a fatal error, else 503.
* ``GET /readyz``: 200 once a leader is known and this node applied all it knows committed.
* ``GET /status``: :meth:`StateManager.status` (with the engine's own fields).
* ``GET /metrics``: Prometheus text (every metric in docs/metrics.md).
* ``GET /state[?consistency=local]`` (admin token): applied index, state hash and the state.
"""

from __future__ import annotations

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from hastate.errors import HAStateError
from hastate.server.routes import Handler, Reply, Request, Served


def healthz(server: Served, _request: Request) -> Reply:
    """Liveness: the node runs and has not stopped itself to protect its data."""
    engine = server.manager.engine
    error = engine.fatal_error()
    ok = engine.running and error is None
    return Reply(200 if ok else 503, {"ok": ok, "error": error})


def readyz(server: Served, _request: Request) -> Reply:
    """Readiness: a leader is known and this node is caught up with what it knows."""
    ready = server.manager.ready()
    return Reply(200 if ready else 503, {"ready": ready, "leader": server.manager.leader()})


def status(server: Served, _request: Request) -> Reply:
    """The node's status (the rows of ``hastate status``)."""
    return Reply(200, server.manager.status())


def metrics(server: Served, _request: Request) -> Reply:
    """Prometheus exposition of every metric of this node."""
    return Reply(200, server.metrics.render(), CONTENT_TYPE_LATEST)


def state(server: Served, request: Request) -> Reply:
    """The replicated state (linearizable unless ``consistency=local``), with its hash."""
    manager = server.manager
    consistency = "local" if request.query.get("consistency") == "local" else "linearizable"
    try:
        current = manager.get_state(consistency)
    except HAStateError as exc:
        return Reply(503, {"error": str(exc)})
    return Reply(200, {"revision": manager.engine.revision(),
                       "state_hash": manager.engine.state_hash(), "state": current})


ROUTES: dict[tuple[str, str], tuple[Handler, bool]] = {
    ("GET", "/healthz"): (healthz, False),
    ("GET", "/readyz"): (readyz, False),
    ("GET", "/status"): (status, False),
    ("GET", "/metrics"): (metrics, False),
    ("GET", "/state"): (state, True),
}
