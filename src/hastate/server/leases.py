"""Lease endpoints (behind the admin token), for ``hastate leases``.

* ``GET /v1/leases``: this replica's lease table, ``{"leases": [{"id", "ttl", "keys",
  "expires_in"}], "leader": bool}``; ``expires_in`` is the seconds left on this node's
  expiry clock when it leads (docs/leases.md), else null.
* ``POST /v1/leases/revoke {"id": N}``: end lease N now, deleting its keys;
  200 ``{"revoked": true|false}`` (false: it had already ended); 400 for a bad body.
"""

from __future__ import annotations

from hastate.server.routes import Handler, Reply, Request, Served


def list_leases(server: Served, _request: Request) -> Reply:
    """The lease table, with the leader's time left per lease."""
    manager = server.manager
    left = manager.engine.lease_expiry()
    rows = [{"id": info.id, "ttl": info.ttl, "keys": sorted(info.keys),
             "expires_in": round(left[info.id], 3) if info.id in left else None}
            for info in sorted(manager.leases().values(), key=lambda i: i.id)]
    return Reply(200, {"leases": rows, "leader": manager.is_leader()})


def revoke_lease(server: Served, request: Request) -> Reply:
    """End one lease through the log."""
    lease = request.body.get("id")
    if isinstance(lease, bool) or not isinstance(lease, int) or lease <= 0:
        return Reply(400, {"error": 'body must be {"id": <lease id, an int > 0>}'})
    return Reply(200, {"revoked": server.manager.revoke_lease(lease)})


ROUTES: dict[tuple[str, str], tuple[Handler, bool]] = {
    ("GET", "/v1/leases"): (list_leases, True),
    ("POST", "/v1/leases/revoke"): (revoke_lease, True),
}
