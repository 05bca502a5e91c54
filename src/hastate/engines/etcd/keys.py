"""Where hastate keeps things under its etcd key prefix (one cluster name = one prefix).

``<prefix>kv/<key>``: the bot's state (so no state key can collide with hastate's own);
``<prefix>_leader``: the leader key; ``<prefix>_handover``: the instance a leadership
handover names; ``<prefix>_members/<id>``: each instance's health, region, http address and
session lease; ``<prefix>_leases/<id>``: the leases hastate granted (other etcd users' leases
are not ours); ``<prefix>_clients/<client hex>/<seq>``: exactly-once markers of writes.
"""

from __future__ import annotations

from hastate.engines.etcd.client import range_end


class Layout:
    """The key names of one cluster's prefix (bytes, as etcd stores them)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.kv = self.prefix + b"kv/"
        self.leader = self.prefix + b"_leader"
        self.handover = self.prefix + b"_handover"
        self.members = self.prefix + b"_members/"
        self.leases = self.prefix + b"_leases/"
        self.clients = self.prefix + b"_clients/"
        self.never = self.prefix + b"_never"     # never written: a compare that is false

    def user(self, key: str) -> bytes:
        """etcd key of state key ``key``."""
        return self.kv + key.encode()

    def user_range(self, prefix: str) -> tuple[bytes, bytes]:
        """[key, range_end) of every state key starting with ``prefix``."""
        start = self.kv + prefix.encode()
        return start, range_end(start)

    def member(self, instance_id: str) -> bytes:
        return self.members + instance_id.encode()

    def lease(self, lease_id: int) -> bytes:
        return self.leases + str(lease_id).encode()

    def dedup(self, client: bytes, seq: int) -> bytes:
        """The exactly-once marker of write ``seq`` of client ``client``."""
        return self.clients + client.hex().encode() + b"/" + str(seq).encode()

    def state_key(self, key: bytes) -> str | None:
        """The state key of etcd key ``key`` (None when it is one of hastate's own)."""
        return key[len(self.kv):].decode() if key.startswith(self.kv) else None
