"""The observability endpoints: what monitoring and the CLI read from every node.

* ``GET /healthz``: 200 while the Raft node runs without a fatal error, else 503.
* ``GET /readyz``: 200 once a leader is known and this node applied all it knows committed.
* ``GET /status``: :meth:`StateManager.status` plus the node's journal and snapshot stats.
* ``GET /metrics``: Prometheus text (every metric in docs/metrics.md).
* ``GET /state[?consistency=local]`` (admin token): applied index, state hash and the state.
"""

from __future__ import annotations

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from hastate.errors import HAStateError
from hastate.observability import stats as stats_mod
from hastate.server.routes import Handler, Reply, Request, Served


def healthz(server: Served, _request: Request) -> Reply:
    """Liveness: the node runs and has not stopped itself to protect its data."""
    node = server.manager.node
    ok = node.running and node.fatal_error is None
    return Reply(200 if ok else 503, {"ok": ok, "error": node.fatal_error})


def readyz(server: Served, _request: Request) -> Reply:
    """Readiness: a leader is known and this node is caught up with what it knows."""
    ready = server.manager.ready()
    return Reply(200 if ready else 503, {"ready": ready, "leader": server.manager.leader()})


def status(server: Served, _request: Request) -> Reply:
    """The node's status (the rows of ``hastate status``)."""
    manager = server.manager
    body = manager.status()
    body.update(stats_mod.for_node(manager.instance_id).as_dict())
    return Reply(200, body)


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
