"""hastate's lease commands on etcd's lease API.

``lease_grant`` grants an etcd lease (TTL rounded up to whole seconds; etcd may raise it to
its minimum) and registers it under ``<prefix>_leases/<id>``, attached to itself, together
with the write's exactly-once marker in one Txn: a retried grant finds the marker, revokes
the lease it just granted and answers the first one. ``lease_keepalive`` and
``lease_revoke`` map to etcd's; a revoke deletes the attached keys at one revision.
"""

from __future__ import annotations

import math

import msgpack

from hastate.engines.etcd.client import EtcdClient, b64, header_revision, unb64
from hastate.engines.etcd.keys import Layout
from hastate.engines.etcd.mirror import Mirror
from hastate.errors import StoreRefusedError
from hastate.state import txn as txn_mod
from hastate.state.codec import Command
from hastate.state.leases import check_ttl


class LeaseOps:
    """Lease commands and lease checks of one engine instance."""

    def __init__(self, client: EtcdClient, layout: Layout, mirror: Mirror) -> None:
        self.client = client
        self.layout = layout
        self.mirror = mirror

    def grant(self, ttl: int) -> int:
        """An etcd lease of ``ttl`` seconds for hastate's own use (not registered)."""
        return int(self.client.call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def alive(self, lease: int) -> bool:
        """etcd still holds ``lease``."""
        answer = self.client.call("/v3/lease/timetolive", {"ID": str(lease)})
        return int(answer.get("TTL", -1)) > 0

    def missing(self, command: Command) -> int:
        """The first lease a refused transaction names that etcd no longer has."""
        try:
            _, success, failure = txn_mod.parse(command.txn)
        except ValueError:
            return 0
        leases = [lease for ops in (success, failure)
                  for lease in txn_mod.leases_of(ops).values() if lease]
        return next((lease for lease in leases if not self.alive(lease)),
                    leases[0] if leases else 0)

    def execute(self, command: Command, marker: bytes, dedup_lease: int,
                timeout: float) -> tuple[tuple | None, int]:
        """(result tuple, revision the mirror must reach) of a lease command."""
        if command.op == "lease_grant":
            return self._grant(command, marker, dedup_lease, timeout)
        lease = int(command.expected["lease"])
        if command.op == "lease_keepalive":
            answer = self.client.call("/v3/lease/keepalive", {"ID": str(lease)}, timeout)
            ttl = int(answer.get("result", answer).get("TTL", 0))
            return (("lease", lease, float(ttl)) if ttl > 0 else ("lease", 0, 0.0)), 0
        try:                                # lease_revoke
            answer = self.client.call("/v3/lease/revoke", {"ID": str(lease)}, timeout)
        except StoreRefusedError as exc:
            if exc.code != 5:
                raise
            return ("lease_end", [], self.mirror.revision), 0
        revision = header_revision(answer)
        return ("lease_end", [lease], revision), revision

    def _grant(self, command: Command, marker: bytes, dedup_lease: int,
               timeout: float) -> tuple[tuple | None, int]:
        ttl = check_ttl(msgpack.unpackb(command.values["ttl"]))
        answer = self.client.call("/v3/lease/grant", {"TTL": str(max(1, math.ceil(ttl)))},
                                  timeout)
        lease, granted = int(answer["ID"]), float(answer["TTL"])
        done = self.client.call("/v3/kv/txn", {
            "compare": [{"key": b64(marker), "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": b64(self.layout.lease(lease)),
                                         "value": b64(str(granted)), "lease": str(lease)}},
                        {"request_put": {"key": b64(marker), "value": b64(f"{lease}:{granted}"),
                                         "lease": str(dedup_lease)}}],
            "failure": [{"request_range": {"key": b64(marker)}}]}, timeout)
        if done.get("succeeded"):
            return ("lease", lease, granted), header_revision(done)
        self.client.call("/v3/lease/revoke", {"ID": str(lease)}, timeout)
        kv = done["responses"][0]["response_range"]["kvs"][0]
        first, first_ttl = unb64(kv["value"]).decode().split(":")
        return ("lease", int(first), float(first_ttl)), int(kv["mod_revision"])
