"""The seam the embedded engine's own recipes build on: what they need of a
:class:`~hastate.StateManager`.

A recipe of this engine (leases) turns its operations into replicated
:class:`~hastate.state.codec.Command` s, proposes them through :meth:`Proposer.propose` and
reads this replica through the manager's public reads. It never reaches into
the manager's private parts or the consensus layer, and it depends on this protocol rather
than on the manager, so the manager may import recipes without an import cycle. Recipes
that other engines must run too (the lock) use only the manager's public primitives
(transactions, leases, watch, reads) instead.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

from hastate.state.codec import Command


class Proposer(Protocol):
    """A replica that proposes commands with exactly-once retries (``StateManager`` is one)."""

    #: This replica's instance id (recipes derive owner ids from it).
    instance_id: str
    #: Default seconds a proposal may take.
    write_timeout: float
    def propose(self, command: Command, timeout: float | None = None) -> tuple:
        """Replicate ``command``; return its apply result (see ``StateManager.propose``)."""

    def get_state(self, consistency: str = "linearizable", *,
                  keys: Iterable[str] | None = None) -> Any:
        """A copy of the state or of ``keys`` (see ``StateManager.get_state``)."""

    def has_lease(self, lease_id: int) -> bool:
        """Whether lease ``lease_id`` is alive on this replica."""
        ...
