"""The replicated lease table: leases with a TTL, and the keys attached to them.

A lease is granted through the log; its id is the log index of the grant (unique, and the
same on every replica). A key put with a lease is *attached* to it; a later put of the key
without that lease, or a delete, detaches it. When the lease is revoked or expires, every
key still attached is deleted at one revision, so every replica and watcher sees the same
deletes.

Apply reads no clock, so the table records no deadline: it records ``refreshed``, the log
index of the grant or of the last keep-alive. Expiry is decided by the leader on its own
monotonic clock (see :class:`hastate.state.housekeeping.LeaseExpirer`) and proposed as a
``lease_expire`` command naming ``(lease, refreshed)`` pairs; apply expires a lease only
if it was not refreshed since, so a keep-alive that commits after the leader decided wins.

Commands (built here, carried in :class:`~hastate.state.codec.Command` fields):
``lease_grant`` (``values["ttl"]``), ``lease_keepalive`` and ``lease_revoke``
(``expected["lease"]``), ``lease_expire`` (``values["leases"]``: [[id, refreshed], ...]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import msgpack

from hastate.state.codec import Command

#: Longest TTL a lease may have (ten years): beyond it a deadline is not a useful number.
MAX_TTL = 10 * 365 * 86400.0


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as this replica's table holds it."""

    id: int
    ttl: float
    refreshed: int          # log index of the grant or of the last keep-alive
    keys: frozenset[str]


def check_ttl(ttl: Any) -> float:
    """``ttl`` as float seconds; ValueError naming the value unless 0 < ttl <= MAX_TTL."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or \
            not 0 < float(ttl) <= MAX_TTL or math.isnan(ttl):
        raise ValueError(f"lease ttl must be a number of seconds in (0, {MAX_TTL:.0f}], "
                         f"got {ttl!r}")
    return float(ttl)


def check_id(lease: Any) -> int:
    """A lease id (an int > 0, or an object with one in ``.id``); ValueError otherwise."""
    lease_id = getattr(lease, "id", lease)
    if isinstance(lease_id, bool) or not isinstance(lease_id, int) or lease_id <= 0:
        raise ValueError(f"a lease must be a Lease or a lease id (int > 0), got {lease!r}")
    return lease_id


def grant_command(ttl: float) -> Command:
    """Grant a lease of ``ttl`` seconds; its id is the log index the grant applies at."""
    return Command(op="lease_grant", values={"ttl": msgpack.packb(check_ttl(ttl))})


def keepalive_command(lease: Any) -> Command:
    """Restart ``lease``'s countdown (on the leader's clock)."""
    return Command(op="lease_keepalive", expected={"lease": check_id(lease)})


def revoke_command(lease: Any) -> Command:
    """End ``lease`` now, deleting its keys."""
    return Command(op="lease_revoke", expected={"lease": check_id(lease)})


def expire_command(due: Iterable[tuple[int, int]]) -> Command:
    """Leader housekeeping: expire each (lease, refreshed) unless refreshed since."""
    pairs = sorted([check_id(lease), int(refreshed)] for lease, refreshed in due)
    return Command(op="lease_expire", values={"leases": msgpack.packb(pairs)})


class LeaseTable:
    """Leases and key attachments; mutated only by the state machine's apply (its lock held)."""

    def __init__(self) -> None:
        self._leases: dict[int, tuple[float, int, set[str]]] = {}
        self._owner: dict[str, int] = {}        # key -> lease it is attached to

    # -- apply ----------------------------------------------------------------------------
    def execute(self, command: Command, index: int) -> tuple[tuple, list[str]]:
        """Run a lease command at log ``index``: (result, keys to delete).

        Results: ``("lease", id, ttl)`` after a grant or keep-alive (id 0: no such lease);
        ``("lease_end", ended ids, revision placeholder 0)`` after a revoke or an expire
        (the machine fills in the revision); ``("invalid", reason)`` when malformed.
        """
        try:
            if command.op == "lease_grant":
                ttl = check_ttl(msgpack.unpackb(command.values["ttl"]))
                self._leases[index] = (ttl, index, set())
                return ("lease", index, ttl), []
            if command.op == "lease_expire":
                pairs = msgpack.unpackb(command.values["leases"])
                due = [check_id(lease) for lease, refreshed in pairs
                       if lease in self._leases and self._leases[lease][1] == refreshed]
            else:
                lease_id = check_id(command.expected["lease"])
                if command.op == "lease_keepalive":
                    entry = self._leases.get(lease_id)
                    if entry is None:
                        return ("lease", 0, 0.0), []
                    self._leases[lease_id] = (entry[0], index, entry[2])
                    return ("lease", lease_id, entry[0]), []
                due = [lease_id] if lease_id in self._leases else []
        except (KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
            return ("invalid", f"malformed {command.op} command: {exc!r}"), []
        doomed: list[str] = []
        for lease_id in due:
            _, _, keys = self._leases.pop(lease_id)
            for key in sorted(keys):
                del self._owner[key]
                doomed.append(key)
        return ("lease_end", due, 0), doomed

    def missing(self, leases: Iterable[int]) -> int:
        """The first of ``leases`` (ids > 0) not in the table, else 0."""
        return next((lease for lease in leases if lease and lease not in self._leases), 0)

    def bind(self, key: str, lease: int) -> None:
        """``key`` was written attached to ``lease`` (0: to none, or deleted)."""
        old = self._owner.pop(key, 0)
        if old:
            self._leases[old][2].discard(key)
        if lease:
            self._leases[lease][2].add(key)
            self._owner[key] = lease

    # -- reads ----------------------------------------------------------------------------
    def lease_of(self, key: str) -> int:
        """The lease ``key`` is attached to (0: none)."""
        return self._owner.get(key, 0)

    def view(self) -> dict[int, LeaseInfo]:
        """A copy of the table: id -> :class:`LeaseInfo`."""
        return {lease: LeaseInfo(lease, ttl, refreshed, frozenset(keys))
                for lease, (ttl, refreshed, keys) in self._leases.items()}

    def __contains__(self, lease: object) -> bool:
        return lease in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    # -- dump -----------------------------------------------------------------------------
    def to_body(self) -> list[list[Any]]:
        """[[id, ttl, refreshed, [keys sorted]], ...] sorted by id (plain msgpack types)."""
        return [[lease, ttl, refreshed, sorted(keys)]
                for lease, (ttl, refreshed, keys) in sorted(self._leases.items())]

    def load_body(self, body: Sequence[Sequence[Any]]) -> None:
        """Replace the table with one from :meth:`to_body` (older bodies: ``[]``)."""
        self._leases = {lease: (float(ttl), refreshed, set(keys))
                        for lease, ttl, refreshed, keys in body}
        self._owner = {key: lease for lease, (_, _, keys) in self._leases.items()
                       for key in keys}
