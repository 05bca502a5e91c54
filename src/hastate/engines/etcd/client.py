"""etcd v3 over its JSON gateway (``POST /v3/...``) with one kept urllib3 connection pool.

Keys and values travel base64-encoded, int64 fields as decimal strings (the gateway's
JSON mapping of the protobuf API). A request goes to the current endpoint; when it cannot
be reached, or answers "unavailable" (no leader, timed out), the next endpoint is tried,
once each; the endpoint list grows with the members' client URLs from
``/v3/cluster/member/list``. Errors become hastate errors: :class:`StoreUnreachableError`
(nothing answered; a write may have applied), :class:`StoreRefusedError` (a refusal with
etcd's code), :class:`LeaseNotFoundError`, :class:`CompactedError`.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from typing import Any, Iterator

import urllib3

from hastate.engines.etcd.settings import EtcdSettings
from hastate.errors import StoreRefusedError, StoreUnreachableError

logger = logging.getLogger(__name__)

#: gRPC codes etcd answers with when another member may do better (deadline exceeded,
#: unavailable: no leader, a stopping member).
RETRY_CODES = (4, 14)
#: Codes that are etcd's verdict on the request itself, whatever the HTTP status.
FINAL_CODES = (3, 5, 9, 11)     # invalid argument, not found, failed precondition, compacted
CODE_UNAUTHENTICATED = 16


def b64(data: str | bytes) -> str:
    """A key or value as the gateway wants it."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(text: str | None) -> bytes:
    """Bytes of a gateway key or value (absent = empty)."""
    return base64.b64decode(text) if text else b""


def range_end(prefix: bytes) -> bytes:
    """The range_end that makes a range cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def header_revision(response: dict[str, Any]) -> int:
    """The store revision a response was served at."""
    return int(response.get("header", {}).get("revision", 0))


class EtcdClient:
    """Requests to an etcd cluster (thread-safe); see the module docstring."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self.endpoints = list(settings.endpoints)
        self._current = 0
        self._lock = threading.Lock()
        self._token: str | None = None
        self.pool = urllib3.PoolManager(
            num_pools=16, maxsize=16, retries=False, ca_certs=settings.ca,
            cert_file=settings.cert, key_file=settings.key,
            cert_reqs="CERT_REQUIRED" if settings.ca else None)

    # -- plumbing ---------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = self._token
        return headers

    def _order(self) -> list[str]:
        with self._lock:
            n = len(self.endpoints)
            return [self.endpoints[(self._current + i) % n] for i in range(n)]

    def _advance(self, failed: str) -> None:
        with self._lock:
            if self.endpoints[self._current % len(self.endpoints)] == failed:
                self._current = (self._current + 1) % len(self.endpoints)

    def call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers; its JSON answer.

        :raises StoreUnreachableError: no endpoint answered (a write may have applied).
        :raises StoreRefusedError: etcd refused the request (its code and message).
        """
        seconds = timeout if timeout is not None else self.settings.request_timeout
        reason = "no endpoint configured"
        data = json.dumps(body).encode()
        for endpoint in self._order():
            for _ in range(2):      # a second time only after re-authenticating
                if self.settings.user and self._token is None:
                    try:
                        self._authenticate(endpoint, seconds)
                    except urllib3.exceptions.HTTPError as exc:
                        reason = f"{endpoint}: {exc}"
                        break
                try:
                    resp = self.pool.request(
                        "POST", endpoint + path, body=data, headers=self._headers(),
                        timeout=urllib3.Timeout(connect=min(1.0, seconds), read=seconds))
                except urllib3.exceptions.HTTPError as exc:
                    reason = f"{endpoint}: {exc}"
                    break
                try:
                    answer = json.loads(resp.data or b"{}")
                except ValueError:
                    answer = {"code": 2, "message": resp.data[:200].decode(errors="replace")}
                if resp.status == 200:
                    return answer
                code = int(answer.get("code", 2))
                message = str(answer.get("message") or answer.get("error") or resp.status)
                if code == CODE_UNAUTHENTICATED and self.settings.user:
                    self._token = None          # expired or revoked: log in again
                    reason = f"{endpoint}: {message} (code {code})"
                    continue
                if code in RETRY_CODES or resp.status >= 500 and code not in FINAL_CODES:
                    reason = f"{endpoint}: {message} (code {code})"
                    break
                raise StoreRefusedError("etcd", path, code, message)
            self._advance(endpoint)
        raise StoreUnreachableError("etcd", self._order(), reason)

    def _authenticate(self, endpoint: str, timeout: float) -> None:
        """Exchange the user and password for a token (etcd's simple or JWT tokens)."""
        resp = self.pool.request(
            "POST", endpoint + "/v3/auth/authenticate",
            body=json.dumps({"name": self.settings.user,
                             "password": self.settings.password}).encode(),
            headers={"Content-Type": "application/json"},
            timeout=urllib3.Timeout(connect=min(1.0, timeout), read=timeout))
        answer = json.loads(resp.data or b"{}")
        if resp.status != 200 or "token" not in answer:
            raise StoreRefusedError("etcd", "/v3/auth/authenticate", int(answer.get("code", 16)),
                                    str(answer.get("message", "authentication failed")))
        self._token = answer["token"]

    def stream(self, path: str, body: dict[str, Any]) -> tuple[str, Any]:
        """Open a streaming request (``/v3/watch``) on the first endpoint that accepts it.

        Returns (endpoint, urllib3 response); iterate the response for JSON lines and call
        its ``shutdown()`` to end it from another thread.
        """
        reason = "no endpoint configured"
        for endpoint in self._order():
            try:
                if self.settings.user and self._token is None:
                    self._authenticate(endpoint, self.settings.request_timeout)
                resp = self.pool.request(
                    "POST", endpoint + path, body=json.dumps(body).encode(),
                    headers=self._headers(), preload_content=False,
                    timeout=urllib3.Timeout(connect=min(1.0, self.settings.request_timeout),
                                            read=self.settings.request_timeout))
            except urllib3.exceptions.HTTPError as exc:
                reason = f"{endpoint}: {exc}"
                self._advance(endpoint)
                continue
            if resp.status == 200:
                # The answer's head came in time; the stream itself may be quiet for long
                # (the engine notices a stalled stream and shuts it down).
                sock = getattr(resp.connection, "sock", None)
                if sock is not None:
                    sock.settimeout(None)
                return endpoint, resp
            reason = f"{endpoint}: HTTP {resp.status} {resp.read()[:200]!r}"
            resp.release_conn()
            self._advance(endpoint)
        raise StoreUnreachableError("etcd", self._order(), reason)

    def forget_token(self) -> None:
        """Authenticate again before the next request (a stream was refused or broke)."""
        self._token = None

    @staticmethod
    def lines(resp: Any) -> Iterator[dict[str, Any]]:
        """The JSON messages of a streaming response (one per line) until it ends."""
        for line in resp:
            line = line.strip()
            if line:
                yield json.loads(line)

    # -- members ----------------------------------------------------------------------------
    def discover(self) -> list[str]:
        """Add every member's client URLs to the endpoints; returns the list."""
        answer = self.call("/v3/cluster/member/list", {})
        urls = [url for m in answer.get("members", []) for url in m.get("clientURLs", [])]
        with self._lock:
            for url in urls:
                if url.rstrip("/") not in self.endpoints:
                    self.endpoints.append(url.rstrip("/"))
            return list(self.endpoints)

    def close(self) -> None:
        """Close every kept connection."""
        self.pool.clear()
