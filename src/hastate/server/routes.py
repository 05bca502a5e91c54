"""What an endpoint is: the parsed :class:`Request`, the :class:`Reply`, and a handler's shape.

A leaf of :mod:`hastate.server`: the endpoint modules (:mod:`~hastate.server.probes`,
:mod:`~hastate.server.admin`) and the server (:mod:`~hastate.server.http`) all import it,
and it imports none of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Protocol


class Served(Protocol):
    """What a handler reads of the server it runs in (``NodeHTTPServer`` has it).

    ``manager`` is the node's :class:`~hastate.StateManager`; it is typed loosely because the
    manager starts this server (naming its class here would make the two import each other).
    """

    manager: Any
    metrics: Any
    admin_token: str | None


@dataclass(frozen=True)
class Request:
    """One parsed request: path without the query, query parameters (the last value of each),
    JSON body (POST) and the headers an endpoint reads (lower-case names)."""

    path: str
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A response: status code and a JSON-able body, or raw bytes with their content type.

    A streamed reply (Server-Sent Events) has ``stream``: after the headers the server calls
    it with the connection's writable file and closes the connection when it returns.
    """

    code: int
    body: Any
    content_type: str = "application/json"
    stream: Callable[[BinaryIO], None] | None = None

    def encode(self) -> bytes:
        """The body as bytes (JSON unless it already is bytes)."""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, default=str).encode()


Handler = Callable[[Served, Request], Reply]
