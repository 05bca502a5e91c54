"""The node's HTTP server: probes, status, metrics and token-guarded admin actions.

Both an embedded :class:`~hastate.StateManager` and ``hastate node run`` serve through
:class:`~hastate.server.http.NodeHTTPServer`; the routes live in :mod:`.probes` (health,
status, metrics, state), :mod:`.admin` (leadership transfer, snapshots, membership) and
:mod:`.v1` (watch as Server-Sent Events, transactions).
"""

from hastate.server.http import NodeHTTPServer
from hastate.server.routes import Reply, Request

__all__ = ["NodeHTTPServer", "Reply", "Request"]
