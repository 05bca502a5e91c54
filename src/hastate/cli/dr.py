"""What ``hastate snapshot take`` and ``hastate restore --into-running`` share: one admin
request to a running node (any engine), its answer turned into an exit code.

A node answers ``/admin/export`` and ``/admin/import`` (:mod:`hastate.server.dr`): 404
no such snapshot, 409 the target holds keys, 422 the snapshot failed verification, 503 the
store could not be read.
"""

from __future__ import annotations

from typing import Any

from hastate.admin_client import call
from hastate.cli.exit import Exit, fail
from hastate.cli.failover import admin_token, refused_token
from hastate.cli.status import fetch_status, unreachable
from hastate.config import ClusterConfig

#: HTTP status of /admin/export or /admin/import -> exit code.
EXITS = {404: Exit.NOT_FOUND, 409: Exit.REFUSED, 422: Exit.FAILED,
         503: Exit.STORE_UNAVAILABLE, 400: Exit.USAGE}


def admin_post(config: ClusterConfig, node_id: str | None, path: str,
               body: dict[str, Any], timeout: float) -> tuple[str, dict[str, Any]]:
    """POST ``body`` to ``path`` on node ``node_id`` (default: the leader); exit on failure."""
    token = admin_token(config)
    if node_id is None:
        rows = fetch_status(config)
        leader = next((r for r in rows if r.get("is_leader")), None)
        if leader is None:
            fail(f"no node reports leading{unreachable(rows)}; check `hastate status`, or "
                 "name a node with --id", Exit.FAILED)
        node_id = leader["id"]
    node = config.node(node_id)
    if not node.http:
        fail(f"node {node_id} has no http address in {config.path}; name another with --id",
             Exit.USAGE)
    code, answer = call(node.id, str(node.http), path, body=body, token=token,
                        timeout=timeout)
    if code == 401:
        fail(refused_token(node.id, answer, config), Exit.UNAUTHORIZED)
    if code != 200:
        fail(f"{node.id}: {answer.get('error')}", EXITS.get(code, Exit.FAILED))
    return node.id, answer
