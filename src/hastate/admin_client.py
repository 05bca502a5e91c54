"""The one HTTP client for nodes' status and admin endpoints (the CLI and the test harness).

A node answers JSON on its ``http`` address (``/status``, ``/state``, ``/admin/*``). Every
caller goes through :func:`call`, so every failure to reach a node reads the same and names
the node and the URL: :class:`~hastate.errors.NodeUnreachableError`. An HTTP error status is
an answer, not a failure: it comes back as ``(code, body)`` for the caller to judge.
"""

from __future__ import annotations

from http.client import HTTPException
import json
import urllib.error
import urllib.request
from typing import Any

from hastate.errors import NodeUnreachableError

__all__ = ["call"]


def call(node: str, http: str, path: str, *, body: dict[str, Any] | None = None,
         token: str | None = None, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    """GET ``path`` of node ``node`` at ``http`` ("host:port"), or POST ``body`` as JSON.

    Returns (HTTP status, decoded JSON object). With ``token`` the request carries
    ``Authorization: Bearer <token>``. Raises NodeUnreachableError when the node does not
    answer within ``timeout`` seconds, or answers something that is not a JSON object.
    """
    url = f"http://{http}{path}"
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers,
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, _decode(node, url, resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, _decode(node, url, raw)
        except NodeUnreachableError:
            return exc.code, {"error": f"{exc.code} {exc.reason}"}
    except (OSError, HTTPException) as exc:
        raise NodeUnreachableError(node, url, str(getattr(exc, "reason", exc))) from None


def _decode(node: str, url: str, raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise NodeUnreachableError(node, url, f"the answer is not a JSON object: {raw[:80]!r}")
    return answer
