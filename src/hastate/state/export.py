"""A whole state at one revision, independent of the engine that held it (DR snapshots).

Every engine can produce it (:meth:`hastate.engines.contract.Engine.export`) and a restore
loads it back through the public API on any engine, so a cluster can move between engines.
Its body is the shape of :meth:`hastate.state.machine.ReplicatedState.to_body` (data,
revision, leases; no sessions, locks or watch history), written in the snapshot container
of :mod:`hastate.snapshots.format`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hastate.errors import CorruptDataError
from hastate.state.txn import Record

#: ``extra`` of the snapshot header that marks an engine-neutral export.
KIND = "export"


@dataclass(frozen=True)
class StateExport:
    """Every key's record and every lease with its keys, read at ``revision``."""

    revision: int
    records: Mapping[str, Record]                       # (value, mod, create, version)
    leases: Mapping[int, tuple[float, frozenset[str]]]  # id -> (ttl, attached keys)

    def to_body(self) -> dict[str, Any]:
        """Plain msgpack types, loadable by ``ReplicatedState.load_body`` too."""
        return {"data": {k: list(r) for k, r in self.records.items()},
                "applied_index": self.revision, "revision": self.revision,
                "sessions": [], "locks": {}, "history": [],
                "leases": [[lease, ttl, 0, sorted(keys)]
                           for lease, (ttl, keys) in sorted(self.leases.items())]}

    @classmethod
    def from_body(cls, body: Any, *, source: str) -> "StateExport":
        """The export a snapshot body holds; CorruptDataError naming ``source`` otherwise."""
        try:
            records = {str(k): (bytes(v), int(m), int(c), int(n))
                       for k, (v, m, c, n) in body["data"].items()}
            leases = {int(i): (float(ttl), frozenset(keys))
                      for i, ttl, _refreshed, keys in body.get("leases", [])}
            return cls(int(body["revision"]), records, leases)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptDataError(f"{source}: not a state snapshot body ({exc!r}); it was "
                                   "written by another program or another hastate") from None
