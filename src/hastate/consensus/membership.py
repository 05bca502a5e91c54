"""Cluster membership: who the voters are, how a change is encoded, and when one is safe.

A configuration is a set of :class:`Member` records (id, Raft address, HTTP address, region).
It changes one server at a time through the Raft log (PySyncObj's dynamic membership): a
change takes effect on each node as soon as the entry is in its log, and is undone if the
entry is truncated. Defect 12: PySyncObj pickles its membership commands (and accepts a
second change while the first is uncommitted); hastate's are msgpack
(``MEMBERSHIP`` type byte + ``{"op", "member"}``), so they pass the transport's strict
schema and carry the node id with the address.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import msgpack

from hastate.consensus.tls import NODE_ID_PATTERN

#: PySyncObj's command-type byte for membership changes (pysyncobj.syncobj._COMMAND_TYPE).
MEMBERSHIP_TYPE = 2
OPS = ("add", "remove")
_ADDRESS = re.compile(r"^[^\s:]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$")


class MembershipError(ValueError):
    """A malformed member record or membership command."""


@dataclass(frozen=True)
class Member:
    """One voter: its id (as in certificates and the cluster file) and where to reach it."""

    id: str
    raft: str
    http: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not NODE_ID_PATTERN.match(self.id):
            raise MembershipError(f"member id {self.id!r} must be 1-63 letters, digits, '.', "
                                  "'_' or '-', starting with a letter or digit")
        for name in ("raft", "http"):
            value = getattr(self, name)
            if (value is None and name == "http") or (value == "" and name == "raft"):
                continue                   # raft "": an instance of a non-raft engine
            if not isinstance(value, str) or not _ADDRESS.match(value) or \
                    not 0 < int(value.rsplit(":", 1)[1]) < 65536:
                raise MembershipError(f"member {self.id!r}: {name} address {value!r} must be "
                                      "host:port")
        if self.region is not None and not isinstance(self.region, str):
            raise MembershipError(f"member {self.id!r}: region must be a string")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (dumps, /status, HTTP bodies)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> "Member":
        """Validate and build a member from a dict with exactly the known fields."""
        if not isinstance(value, Mapping):
            raise MembershipError(f"a member must be a map, not {type(value).__name__}")
        unknown = set(value) - {"id", "raft", "http", "region"}
        if unknown or "id" not in value or "raft" not in value:
            raise MembershipError(f"a member needs id and raft (and optionally http, region); "
                                  f"got fields {sorted(value)}")
        return cls(value["id"], value["raft"], value.get("http"), value.get("region"))


@dataclass(frozen=True)
class Change:
    """One single-server configuration change."""

    op: str
    member: Member

    def encode(self) -> bytes:
        """The PySyncObj log command: type byte + msgpack body (never a pickle)."""
        body = msgpack.packb({"op": self.op, "member": self.member.to_dict()}, use_bin_type=True)
        return bytes([MEMBERSHIP_TYPE]) + body

    def apply(self, members: Mapping[str, Member], reverse: bool = False) -> dict[str, Member]:
        """The configuration (raft address -> member) after this change (or after undoing it)."""
        adding = (self.op == "add") != reverse
        result = dict(members)
        if adding:
            result[self.member.raft] = self.member
        else:
            result.pop(self.member.raft, None)
        return result


def decode_change(command: bytes) -> Change | None:
    """The membership change in a log command; None for any other command type.

    Raises :class:`MembershipError` for a malformed membership command (including
    PySyncObj's pickled ones, which hastate never writes).
    """
    if not command or command[0] != MEMBERSHIP_TYPE:
        return None
    try:
        body = msgpack.unpackb(command[1:], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise MembershipError(f"membership command is not msgpack: {exc}") from None
    if not isinstance(body, dict) or set(body) != {"op", "member"} or body["op"] not in OPS:
        raise MembershipError("membership command must be {op: add|remove, member: {...}}")
    return Change(body["op"], Member.from_dict(body["member"]))


def majority(size: int) -> int:
    """Votes needed in a configuration of ``size`` voters."""
    return size // 2 + 1


def check_change(change: Change, members: Mapping[str, Member], live: Iterable[str],
                 leader: str) -> str | None:
    """Why ``change`` must be refused now, or None when it is safe.

    ``members`` is the current configuration (raft address -> member), ``live`` the
    addresses that answered just now (the leader included) and ``leader`` the leader's address.
    A change is safe when the members that are live now, without counting a node being
    added (it has yet to catch up), already form a majority of the new configuration, so
    committing keeps working the moment the change takes effect.
    """
    new = change.member
    ids = {m.id: m for m in members.values()}
    if change.op == "add":
        if not new.raft:
            return f"{new.id!r} needs a raft address (host:port) to join a Raft cluster"
        if new.id in ids:
            return f"{new.id!r} is already a member (at {ids[new.id].raft})"
        if new.raft in members:
            return f"address {new.raft} already belongs to member {members[new.raft].id!r}"
    else:
        current = ids.get(new.id)
        if current is None:
            return f"{new.id!r} is not a member; members: {sorted(ids)}"
        if current.raft == leader:
            return (f"{new.id!r} is the leader: move leadership to another member first "
                    "(`hastate failover --to ID`)")
        if len(members) <= 1:
            return "cannot remove the last member"
    after = change.apply(members)
    live_after = {a for a in live if a in after and a != new.raft}
    need = majority(len(after))
    if len(live_after) < need:
        down = sorted(m.id for a, m in after.items() if a not in live_after and a != new.raft)
        return (f"would lose quorum: after this change {need} of {len(after)} members must be "
                f"up, but only {len(live_after)} are reachable now (down or lagging: "
                f"{', '.join(down) or 'none'}); bring them back first")
    return None
