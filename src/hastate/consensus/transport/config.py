"""Transport security settings: the modes, :class:`TransportSecurity` and :func:`check_mode`.

``TRANSPORT_MODES`` is the one list of modes; the cluster file's validation uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping

from hastate.config import is_loopback_host
from hastate.consensus import tls, wire
from hastate.errors import ConfigError

Mode = Literal["plaintext", "tls", "psk"]
#: The transport modes, most to least preferred for production.
TRANSPORT_MODES: tuple[str, ...] = ("tls", "psk", "plaintext")
MODES = TRANSPORT_MODES  # the name this module's callers used first


@dataclass(frozen=True)
class TransportSecurity:
    """How a node secures its Raft connections (see docs/security.md).

    ``tls`` needs ``ca``, ``cert`` and ``key`` (PEM paths) and ``node_ids`` mapping every
    node's Raft address ("host:port") to the node id in its certificate. ``psk`` needs
    ``psk`` (at least 32 random bytes, the same on every node). ``plaintext`` needs nothing
    but is refused unless every address is on loopback (:func:`check_mode`).
    """

    mode: Mode = "tls"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    psk: bytes | None = None
    max_frame_bytes: int = wire.DEFAULT_MAX_FRAME_BYTES
    node_ids: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in TRANSPORT_MODES:
            raise ConfigError(f"unknown transport mode; choose one of {', '.join(TRANSPORT_MODES)}",
                              field="transport.mode", value=self.mode)
        if type(self.max_frame_bytes) is not int or self.max_frame_bytes < 64 * 1024:
            raise ConfigError("must be an integer of at least 65536 bytes",
                              field="transport.max_frame_bytes", value=self.max_frame_bytes)
        ids = list(self.node_ids.values())
        for node_id in ids:
            tls.check_node_id(node_id)
        if len(set(ids)) != len(ids):
            raise ConfigError("two addresses map to the same node id",
                              field="transport.node_ids", value=dict(self.node_ids))
        if self.mode == "tls":
            missing = [name for name in ("ca", "cert", "key") if not getattr(self, name)]
            if missing:
                raise ConfigError(f"mode 'tls' needs {', '.join(missing)} (PEM file paths; "
                                  "create them with `hastate certs init`)",
                                  field="transport.tls")
        if self.mode == "psk":
            tls.check_psk(self.psk)


def _is_loopback(address: str) -> bool:
    return is_loopback_host(address.rsplit(":", 1)[0].strip("[]"))


def check_mode(mode: str, addresses: Iterable[str]) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is known and allowed for these addresses.

    ``plaintext`` sends Raft traffic (and every replicated write) unauthenticated and in the
    clear, so it is only allowed when every node (and bind) address is on loopback.
    """
    if mode not in TRANSPORT_MODES:
        raise ConfigError(f"unknown transport mode; choose one of {', '.join(TRANSPORT_MODES)}",
                          field="transport.mode", value=mode)
    if mode != "plaintext":
        return
    exposed = [address for address in addresses if not _is_loopback(address)]
    if exposed:
        raise ConfigError(
            "mode 'plaintext' sends Raft traffic without authentication or encryption and is "
            "allowed only when every node address is on loopback (127.0.0.0/8, ::1, "
            f"localhost); not on loopback: {', '.join(exposed)}. Use mode 'tls' "
            "(see docs/security.md)", field="transport.mode", value=mode)
