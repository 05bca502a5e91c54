"""Hand-made peers for attack tests: raw TCP/TLS clients that speak (or abuse) the wire."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import msgpack

from hastate.consensus import wire


def split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def tcp(address: str) -> socket.socket:
    """A plain TCP connection to ``address``."""
    return socket.create_connection(split(address), timeout=5)


def tls_client(address: str, ca: str, cert: str | None = None, key: str | None = None
               ) -> ssl.SSLSocket:
    """A TLS 1.3 connection presenting ``cert`` (or none); the handshake may still be
    rejected by the server afterwards (TLS 1.3 clients finish before the server checks)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(ca)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx.wrap_socket(tcp(address))


def frame(message: dict[str, Any] | list[Any]) -> bytes:
    """A wire frame with ``message`` msgpack-encoded, without schema validation."""
    return wire.encode_frame(msgpack.packb(message, use_bin_type=True))


def hello(address: str) -> bytes:
    return frame({"type": "hello", "address": address})


def closed_by_peer(sock: socket.socket, timeout: float = 5.0, replies_ok: bool = False) -> bool:
    """True if the peer closes (or resets) the connection within ``timeout``; False if it is
    still open. Any data it sends first fails the check unless ``replies_ok``."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True
        except socket.timeout:
            return False
        if not data:
            return True
        if not replies_ok:
            raise AssertionError(f"peer answered {data[:80]!r}")
        sock.settimeout(max(0.01, deadline - time.monotonic()))


class Touch:
    """Unpickling this runs ``touch path``: the canary for remote code execution."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))
