"""Transport security settings: :class:`TransportSecurity`.

The modes and the rule for which addresses allow plaintext live in :mod:`hastate.addresses`
(``TRANSPORT_MODES``, :func:`~hastate.addresses.check_transport_mode`), shared with the
cluster file's validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

from hastate.addresses import check_transport_mode
from hastate.consensus import tls, wire
from hastate.errors import ConfigError

Mode = Literal["plaintext", "tls", "psk"]


@dataclass(frozen=True)
class TransportSecurity:
    """How a node secures its Raft connections (see docs/security.md).

    ``tls`` needs ``ca``, ``cert`` and ``key`` (PEM paths) and ``node_ids`` mapping every
    node's Raft address ("host:port") to the node id in its certificate. ``psk`` needs
    ``psk`` (at least 32 random bytes, the same on every node). ``plaintext`` needs nothing
    but is refused unless every address is on loopback
    (:func:`~hastate.addresses.check_transport_mode`).
    """

    mode: Mode = "tls"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    psk: bytes | None = None
    max_frame_bytes: int = wire.DEFAULT_MAX_FRAME_BYTES
    node_ids: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_transport_mode(self.mode, ())
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
