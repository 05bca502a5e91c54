"""The engine contract: what :class:`~hastate.StateManager` needs from the store underneath.

A :class:`StateManager` turns the bot's calls into :class:`~hastate.state.codec.Command` s and
reads; an *engine* makes them durable, ordered and shared between the bot's instances, and
says who may act. ``raft`` (the default) replicates commands through hastate's embedded Raft
cluster; other engines execute the same commands on a store the team already runs. The
manager talks to nothing else, so everything above this line (the API, recipes, event
streams, the HTTP endpoints, the CLI) behaves the same on every engine; the contract suite
(``tests/engines/``) proves it against each implementation.

Every engine keeps these promises; where a store cannot keep one, the engine raises
:class:`~hastate.errors.NotSupportedError` naming the operation and the reason:

* **Writes** apply exactly once, even when retried after a lost answer, and return the
  state machine's result tuples (``("ok", revision, index)``, ``("txn", succeeded,
  revision, responses)``, ``("lease", id, ttl)``, ...; see :mod:`hastate.state.machine`).
* **Revisions** grow strictly with every write that changed something; a key's
  ``mod_revision`` / ``create_revision`` / ``version`` are etcd's. Revisions need not be
  contiguous (an engine may share its counter with other users of the store).
* **Reads**: ``linearizable`` reflects every write acknowledged anywhere before the call;
  ``local`` may be stale but never goes back in time on one engine instance.
* **Watch** delivers every change under a prefix from a revision, in revision order, with
  no gap and no duplicate, or fails with a :class:`~hastate.errors.WatchError`.
* **Leadership**: at most one instance's :meth:`Engine.is_leader` is true at any instant of
  real time (under the engine's stated clock assumption); the fencing token grows with every
  change of leader; when unsure, an instance is not leader.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Iterable, Literal, Protocol, TypeVar, runtime_checkable

from hastate.consensus.membership import Member
from hastate.state.codec import Command
from hastate.state.export import StateExport
from hastate.state.leases import LeaseInfo
from hastate.state.machine import ChangeListener
from hastate.state.txn import Record
from hastate.state.watch import Watcher

T = TypeVar("T")
Consistency = Literal["linearizable", "local"]


@runtime_checkable
class Engine(Protocol):
    """One instance's handle on a replicated store (see the module docstring for the
    guarantees). Methods are thread-safe; none is called before :meth:`start`."""

    #: The engine's name in the cluster file's ``[cluster] engine`` (``raft``, ``etcd``...).
    name: str

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Connect (or start replicating); returns without waiting for a leader."""

    def stop(self) -> None:
        """Release everything started; pending writes fail with ``outcome_unknown``. Idempotent."""

    @property
    def running(self) -> bool:
        """Started and not stopped, and no fatal error since."""

    def ready(self) -> bool:
        """A leader is known and local reads reflect everything known committed."""

    def healthy(self) -> bool:
        """The engine's own health check: its threads run and its disk, if it keeps files,
        accepts a synced write (the default health check of failover)."""

    def fatal_error(self) -> str | None:
        """Why this instance stopped itself to protect the data (None while it has not):
        ``/healthz`` answers 503 and ``hastate node run`` exits with it. Cheap."""

    # -- writes -------------------------------------------------------------------------
    def submit(self, command: Command, timeout: float,
               finish: Callable[[tuple], T]) -> "Future[T]":
        """Execute ``command`` exactly once; the future holds ``finish(result)``.

        The engine gives the command this instance's client id and the next sequence
        number. Errors: ``OverloadedError`` (certainly not applied), ``WriteError`` with
        ``outcome_unknown`` (timeout or lost answer), ``NotSupportedError`` (an op this
        engine cannot execute), or whatever ``finish`` raises.
        """

    # -- reads --------------------------------------------------------------------------
    def read(self, keys: Iterable[str] | None, consistency: Consistency,
             timeout: float | None) -> tuple[dict[str, Any], int]:
        """Decoded values of ``keys`` (all keys when None) and the revision they were read
        at. :raises ReadError: a linearizable read could not be confirmed in time."""

    def records(self, keys: Iterable[str]) -> dict[str, Record]:
        """This instance's view of ``keys`` that exist: encoded value, mod_revision,
        create_revision, version (``local`` consistency)."""

    def scan(self, prefix: str) -> tuple[list[tuple[str, Record]], int]:
        """(key, record) of every key under ``prefix`` on this instance and the revision
        they reflect (``local`` consistency; for derived indexes, not the read path)."""

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Feed ``listener`` (:class:`~hastate.state.machine.ChangeListener`) every change
        this instance applies, in revision order, after the watch hub, without blocking."""

    def revisions(self) -> dict[str, int]:
        """mod_revision of every key (``local`` consistency)."""

    def revision(self) -> int:
        """The newest revision this instance has seen."""

    def key_count(self) -> int:
        """How many keys the state holds (``local`` consistency)."""

    def state_hash(self) -> str:
        """A digest of the state at :meth:`revision` (equal on instances that agree)."""

    def export(self, timeout: float | None) -> StateExport:
        """Every key (encoded value, mod/create revision, version) and every live lease with
        its TTL and keys, all read at one revision that reflects every write acknowledged
        before the call (disaster-recovery snapshots; see :mod:`hastate.state.export`).

        :raises ReadError: the consistent read could not be confirmed in time.
        """

    # -- leases -------------------------------------------------------------------------
    def leases(self) -> dict[int, LeaseInfo]:
        """Live leases: id -> ttl, last refresh, attached keys (``local`` consistency)."""

    def has_lease(self, lease_id: int) -> bool:
        """Whether ``lease_id`` is alive as far as this instance knows."""

    def lease_expiry(self) -> dict[int, float]:
        """Seconds each live lease has left by the clock that expires it ({} where this
        instance cannot tell, e.g. a Raft follower)."""

    # -- watch --------------------------------------------------------------------------
    def watch(self, prefix: str, start_revision: int | None, *, prev_value: bool,
              progress_interval: float | None, buffer: int | None) -> Watcher:
        """Changes of keys under ``prefix`` from ``start_revision`` (None: from now).

        :raises CompactedError: ``start_revision`` is older than the engine holds.
        """

    def watchers(self) -> int:
        """Watches open on this instance."""

    # -- leadership ---------------------------------------------------------------------
    def is_leader(self) -> bool:
        """True only while this instance may act as leader right now (safe to act on)."""

    def fencing_token(self) -> int | None:
        """Grows with every change of leader; None while this instance does not lead."""

    def leader(self) -> str | None:
        """Instance id of the last known leader (None when unknown)."""

    def transfer(self, target: str, timeout: float | None) -> float:
        """Hand leadership to instance ``target``; seconds until ``target`` leads.

        :raises FailoverError: ``target`` did not take over in time (leadership may stay).
        """

    def failover_candidates(self, fresh_after: float | None) -> list[tuple[int, str]]:
        """(progress, instance id) of every other instance that reported healthy after the
        monotonic time ``fresh_after`` (None: every other instance, health unknown); larger
        progress = more caught up."""

    def publish_health(self, ok: bool) -> None:
        """Tell the other instances this one's health (they pick failover targets with it)."""

    # -- membership and status ----------------------------------------------------------
    def members(self) -> list[Member]:
        """The instances of the cluster, sorted by id."""

    def change_membership(self, action: Literal["add", "remove"], member: Member | str,
                          timeout: float) -> int:
        """Add a :class:`Member` or remove an instance id; returns the change's index."""

    def status(self) -> dict[str, Any]:
        """Engine fields of ``StateManager.status()``: at least ``role``, ``is_leader``,
        ``leader``, ``fencing_token``, ``term`` and ``members`` (list of dicts). Optional,
        read by ``/metrics`` and ``hastate status`` when present: ``peers`` (id -> dict
        with ``connected``, ``match_index``, ``lag``, ``last_contact_age``),
        ``writes_in_flight``, ``lease_remaining``, ``lease_expiries``, ``leader_changes``,
        ``member``, ``profile``, ``fatal_error``; engine-specific fields beside them."""

    def log_context(self) -> dict[str, Any]:
        """The engine's fields on every structured log line: ``term`` and ``role`` (None
        when unknown). Called for each line, so cheap and never raising."""
