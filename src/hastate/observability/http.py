"""The node's HTTP endpoints: /healthz, /readyz, /status, /metrics and token-guarded admin.

Admin actions (``POST /admin/*``) and ``GET /state`` need ``Authorization: Bearer <token>``
with the token from the environment variable named by ``admin_token_env``; without a
configured token they are disabled. A missing or wrong token gets 401 and nothing is done.

* ``POST /admin/transfer-leadership {"to": ID}``: 200 ``{"leader", "seconds"}`` once ID
  leads; 409 when it did not move in time.
* ``POST /admin/snapshot``: 200 with the snapshot provider's answer (the SnapshotService's
  ``snapshot_now()``: index, size, seconds); 409 on a follower; 501 while no snapshot
  provider is registered on this node (no ``[snapshots] store``; see
  :mod:`hastate.observability.stats`).
* ``POST /admin/members {"op": "add", "member": {"id", "raft", "http", "region"}}`` or
  ``{"op": "remove", "id": ID}``: 200 ``{"commit_index", "members"}`` once the change is
  committed; 409 off the leader (``leader`` names it); 422 when refused (would lose quorum,
  already a member, another change in flight: ``error`` says which); 400 for a bad body;
  504 when it did not commit in time (check ``/status`` before retrying).

``GET /v1/watch`` (Server-Sent Events) and ``POST /v1/txn`` are served by
:mod:`hastate.server.v1`, behind the same token.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from hastate.config import split_address
from hastate.consensus.membership import Member, MembershipError
from hastate.errors import HAStateError, MembershipRefused, NotLeaderError, WriteTimeoutError
from hastate.observability import stats as stats_mod
from hastate.observability.metrics import NodeMetrics
from hastate.server import v1

if TYPE_CHECKING:
    from hastate.manager import StateManager

logger = logging.getLogger(__name__)


class NodeHTTPServer:
    """Serves one node's health, status and metrics on its configured ``http`` address."""

    def __init__(self, manager: "StateManager", address: str, *,
                 admin_token: str | None = None) -> None:
        self.manager = manager
        self.metrics = NodeMetrics(manager)
        self.admin_token = admin_token
        host, port = split_address(address)
        handler = type("Handler", (_Handler,), {"node_server": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="hastate-http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        return self._server.server_address[1]

    def start(self) -> "NodeHTTPServer":
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    node_server: NodeHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        logger.debug("http " + fmt, *args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, default=str).encode())

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        manager = self.node_server.manager
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            ok = manager.node.running and manager.node.fatal_error is None
            self._json(200 if ok else 503, {"ok": ok, "error": manager.node.fatal_error})
        elif path == "/readyz":
            ready = manager.ready()
            self._json(200 if ready else 503, {"ready": ready, "leader": manager.leader()})
        elif path == "/status":
            status = manager.status()
            status.update(stats_mod.for_node(manager.instance_id).as_dict())
            self._json(200, status)
        elif path == "/state":
            if not self._check_token():
                return
            consistency = "local" if "consistency=local" in self.path else "linearizable"
            try:
                state = manager.get_state(consistency)
            except HAStateError as exc:
                self._json(503, {"error": str(exc)})
                return
            self._json(200, {"applied_index": manager.machine.applied_index,
                             "state_hash": manager.machine.state_hash(), "state": state})
        elif path == "/metrics":
            self._send(200, self.node_server.metrics.render(), CONTENT_TYPE_LATEST)
        elif v1.handle_get(self, manager):
            pass
        else:
            self._json(404, {"error": f"no such endpoint {path}; try /status"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= 1 << 20:
            self.close_connection = True
            self._json(400, {"error": "Content-Length must be a number up to 1 MiB"})
            return
        raw = self.rfile.read(length)   # read even when refusing, to keep the connection sane
        if not self._check_token():
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._json(400, {"error": "body must be a JSON object"})
            return
        manager = self.node_server.manager
        if v1.handle_post(self, manager, path, body):
            return
        try:
            if path == "/admin/transfer-leadership":
                target = body.get("to")
                if not isinstance(target, str):
                    self._json(400, {"error": "body must be {\"to\": \"<instance id>\"}"})
                    return
                seconds = manager.trigger_failover(target)
                self._json(200, {"leader": target, "seconds": round(seconds, 3)})
            elif path == "/admin/snapshot":
                trigger = stats_mod.for_node(manager.instance_id).snapshot_trigger
                if trigger is None:
                    self._json(501, {"error": "snapshots are not available on this node: no "
                                     "snapshot provider is registered (is [snapshots] store set "
                                     "and snapshot support wired in this build?); nothing was "
                                     "done"})
                    return
                try:
                    result = trigger()
                except (RuntimeError, TimeoutError) as exc:   # not leader, upload failed
                    self._json(409, {"error": f"snapshot not taken: {exc}; post to the node "
                                     "holding the leader lease (`hastate status`)"})
                    return
                self._json(200, result if isinstance(result, dict) else {"result": result})
            elif path == "/admin/members":
                self._change_members(body)
            else:
                self._json(404, {"error": f"no such admin action {path}"})
        except HAStateError as exc:
            self._json(409, {"error": str(exc)})
        except Exception as exc:  # a provider bug: say so instead of dropping the connection
            logger.exception("admin action %s failed", path)
            self._json(500, {"error": f"{path} failed: {exc!r}; see the node's log"})

    def _change_members(self, body: dict[str, Any]) -> None:
        manager = self.node_server.manager
        op = body.get("op")
        try:
            if op == "add":
                index = manager.add_member(Member.from_dict(body.get("member")))
            elif op == "remove" and isinstance(body.get("id"), str):
                index = manager.remove_member(body["id"])
            else:
                raise MembershipError('body must be {"op": "add", "member": {"id", "raft", '
                                      '"http", "region"}} or {"op": "remove", "id": ID}')
        except MembershipError as exc:
            self._json(400, {"error": str(exc)})
        except NotLeaderError as exc:
            self._json(409, {"error": str(exc), "leader": exc.leader})
        except MembershipRefused as exc:
            self._json(422, {"error": str(exc)})
        except WriteTimeoutError as exc:
            self._json(504, {"error": str(exc)})
        else:
            self._json(200, {"commit_index": index,
                             "members": [m.to_dict() for m in manager.members()]})

    def _check_token(self) -> bool:
        """True when the request carries the admin token; otherwise answer 401 and say why."""
        token = self.node_server.admin_token
        if not token:
            self._json(401, {"error": "admin endpoints are disabled on this node: set "
                             "admin_token_env in [cluster] and export that variable before "
                             "starting the node"})
            return False
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            self._json(401, {"error": "missing or wrong bearer token: send 'Authorization: "
                             "Bearer <token>' with the value of the environment variable "
                             "named by admin_token_env"})
            return False
        return True
