"""Routing, the bearer-token check and the threaded server for one node's endpoints.

A route is ``(method, path) -> (handler, guarded)``; a handler takes the server and the
:class:`Request` and returns a :class:`Reply`. Guarded routes (``GET /state`` and every
``POST /admin/*``) need ``Authorization: Bearer <token>`` with the token from the
environment variable named by ``admin_token_env``; without a configured token they are
disabled. A missing or wrong token gets 401 and nothing is done. The endpoints themselves
are documented in :mod:`hastate.server.probes`, :mod:`hastate.server.admin`,
:mod:`hastate.server.dr` and :mod:`hastate.server.v1`.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hastate.addresses import split_address
from hastate.errors import ConfigError, HAStateError
from hastate.observability import stats as stats_mod
from hastate.observability.metrics import NodeMetrics
from hastate.server import admin, dr, events_api, leases, probes, v1
from hastate.server.routes import Handler, Reply, Request

logger = logging.getLogger(__name__)

#: Largest request body accepted (admin bodies are a few hundred bytes).
MAX_BODY = 1 << 20


def _routes() -> dict[tuple[str, str], tuple[Handler, bool]]:
    """Every endpoint: (method, path) -> (handler, needs the admin token)."""
    return {**probes.ROUTES, **admin.ROUTES, **dr.ROUTES, **v1.ROUTES, **leases.ROUTES,
            **events_api.ROUTES}


#: How often the serving thread looks for a stop request (s): shutdown waits this long at
#: most, where socketserver's default of 0.5 s made every node stop and handover slower.
SHUTDOWN_POLL = 0.05


class NodeHTTPServer:
    """Serves one node's probes, status, metrics and admin actions on its ``http`` address.

    The socket is bound in the constructor, so a taken port fails before the node starts:
    :class:`~hastate.errors.ConfigError` naming the node and the address.
    """

    def __init__(self, manager: Any, address: str, *,
                 admin_token: str | None = None, config_path: str | None = None) -> None:
        self.manager = manager
        self.admin_token = admin_token
        self.routes = _routes()
        host, port = split_address(address)
        handler = type("Handler", (_Handler,), {"node_server": self})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            taken = exc.errno == errno.EADDRINUSE
            raise ConfigError(
                f"node {manager.instance_id} cannot serve HTTP on {address}: "
                + ("the port is already in use (another node or program on this machine "
                   "holds it); stop it, or give this node another http address"
                   if taken else f"{exc.strerror}"),
                field="nodes.http", value=address, path=config_path) from None
        self._server.daemon_threads = True
        self.metrics = NodeMetrics(manager)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        args=(SHUTDOWN_POLL,),
                                        name=f"hastate-http-{manager.instance_id}", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        return self._server.server_address[1]

    def start(self) -> "NodeHTTPServer":
        """Serve in a background thread (call once the node runs: its stats attach here)."""
        stats_mod.attach(self.manager)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (also when never started)."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def dispatch(self, method: str, raw_path: str, body: dict[str, Any],
                 authorization: str, headers: dict[str, str] | None = None) -> Reply:
        """Route one request; 404 for unknown paths, 401 when a guarded route lacks the token."""
        parsed = urllib.parse.urlsplit(raw_path)
        route = self.routes.get((method, parsed.path))
        guarded = route[1] if route is not None else parsed.path.startswith("/admin/")
        if guarded:
            refused = self.check_token(authorization)
            if refused is not None:
                return refused
        if route is None:
            hint = "try /status" if method == "GET" else "see docs/operations.md"
            return Reply(404, {"error": f"no such endpoint {method} {parsed.path}; {hint}"})
        handler = route[0]
        request = Request(parsed.path, dict(urllib.parse.parse_qsl(parsed.query)), body,
                          headers or {})
        try:
            return handler(self, request)
        except HAStateError as exc:
            return Reply(409, {"error": str(exc)})
        except Exception as exc:  # a provider bug: say so instead of dropping the connection
            logger.exception("http handler failed", extra={"path": parsed.path})
            return Reply(500, {"error": f"{parsed.path} failed: {exc!r}; see the node's log"})

    def check_token(self, authorization: str) -> Reply | None:
        """None when ``authorization`` carries the admin token, else the 401 to send."""
        if not self.admin_token:
            return Reply(401, {"error": "admin endpoints are disabled on this node: set "
                               "admin_token_env in [cluster] and export that variable before "
                               "starting the node"})
        if not hmac.compare_digest(authorization.encode(),
                                   f"Bearer {self.admin_token}".encode()):
            return Reply(401, {"error": "missing or wrong bearer token: send 'Authorization: "
                               "Bearer <token>' with the value of the environment variable "
                               "named by admin_token_env"})
        return None


class _Handler(BaseHTTPRequestHandler):
    node_server: NodeHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        logger.debug("http " + fmt, *args)

    def _send(self, reply: Reply) -> None:
        if reply.stream is not None:
            self._stream(reply)
            return
        body = reply.encode()
        self.send_response(reply.code)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, reply: Reply) -> None:
        self.close_connection = True
        self.send_response(reply.code)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            reply.stream(self.wfile)
        except OSError:               # the client went away
            pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        headers = {"last-event-id": self.headers.get("Last-Event-ID", "")}
        self._send(self.node_server.dispatch("GET", self.path, {},
                                             self.headers.get("Authorization", ""), headers))

    def do_POST(self) -> None:  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(Reply(400, {"error": "Content-Length must be a number up to 1 MiB"}))
            return
        raw = self.rfile.read(length)   # read even when refusing, to keep the connection sane
        authorization = self.headers.get("Authorization", "")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            refused = self.node_server.check_token(authorization)
            self._send(refused or Reply(400, {"error": "body must be a JSON object"}))
            return
        self._send(self.node_server.dispatch("POST", self.path, body, authorization))
