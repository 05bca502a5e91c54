"""Addresses ("host:port") and the transport modes they allow: one rule for every caller.

A leaf module (it imports only :mod:`hastate.errors`), so both the cluster file loader
(:mod:`hastate.config`) and the Raft transport (:mod:`hastate.consensus`) use it without
importing each other. ``plaintext`` sends Raft traffic unauthenticated and in the clear, so
whether it is allowed is a question about addresses: only when every one is on loopback.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from hastate.errors import ConfigError

#: The transport modes, most to least preferred for production (the only list of them).
TRANSPORT_MODES: tuple[str, ...] = ("tls", "psk", "plaintext")


def split_address(address: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 hosts in brackets); ValueError with the reason when malformed."""
    if not isinstance(address, str) or ":" not in address:
        raise ValueError("expected \"host:port\"")
    host, _, port_s = address.rpartition(":")
    host = host.strip("[]")
    if not host:
        raise ValueError("host is empty")
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"port {port_s!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is outside 1-65535")
    return host, port


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_address(address: str) -> bool:
    """True when the host of "host:port" is on loopback (a bind address may use port 0)."""
    return is_loopback_host(address.rsplit(":", 1)[0].strip("[]"))


def check_transport_mode(mode: str, addresses: Iterable[str], *, field: str = "transport.mode",
                         path: str | None = None) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is known and allowed for these addresses.

    ``field`` and ``path`` name the setting in the error: ``cluster.transport`` of a cluster
    file, or ``transport.mode`` of a :class:`~hastate.consensus.transport.TransportSecurity`.
    """
    if mode not in TRANSPORT_MODES:
        raise ConfigError(f"unknown transport mode {mode!r}; choose one of "
                          f"{', '.join(TRANSPORT_MODES)}", field=field, value=mode, path=path)
    if mode != "plaintext":
        return
    exposed = [address for address in addresses if not is_loopback_address(address)]
    if exposed:
        raise ConfigError(
            "plaintext Raft traffic is allowed only when every node address is on loopback "
            "(127.0.0.0/8, ::1, localhost): it is neither authenticated nor encrypted; not on "
            f"loopback: {', '.join(exposed)}. Use mode 'tls' (a [tls] table; create the files "
            "with `hastate certs init`) or 'psk' (secret_env); see docs/security.md",
            field=field, value=mode, path=path)
