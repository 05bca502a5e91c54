"""A one-replica lock host on a fake monotonic clock, and the lock history checker.

:class:`SimHost` gives the lock recipe what a StateManager gives it (leases, transactions,
watch, local reads) over a real :class:`ReplicatedState`, with the real
:class:`LeaseExpirer` as the leader's clock; ``delay`` seconds pass between a proposal being
sent and applied (the client counts its lease from the send, the leader from the apply).

:func:`check_lock_history` checks what the holders believed: each :class:`HoldSample` says
that at instant ``at`` (samples of one instant are taken together, between two steps of
the run) the lock object ``owner`` acted with ``token``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from hastate.errors import LeaseNotFoundError, WriteError
from hastate.recipes.lease import Lease
from hastate.state import txn as txn_mod
from hastate.state.codec import Command
from hastate.state.housekeeping import LeaseExpirer
from hastate.state.machine import ReplicatedState
from hastate.state.watch import WatchHub, Watcher


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SimHost:
    """The lock's host over one replica; the leader's expirer runs on :meth:`tick`."""

    def __init__(self, instance_id: str = "instance-1") -> None:
        self.instance_id = instance_id
        self.write_timeout = 5.0
        self.clock = FakeClock()
        self.machine = ReplicatedState()
        self.hub = WatchHub()
        self.machine.add_change_listener(self.hub)
        self.index = 0
        self.term = 1
        self.delay = 0.0            # seconds between sending and applying each proposal
        self.fail = False           # proposals time out (outcome unknown), nothing applies
        self.writes: list[str] = []
        self.expirer = LeaseExpirer(self.machine, leader_term=lambda: self.term,
                                    propose=self._apply, clock=self.clock)
        self.expirer.observe_leadership()

    # -- what the recipe uses ----------------------------------------------------------------
    def propose(self, command: Command, timeout: float | None = None) -> tuple:
        if self.fail:
            raise WriteError("simulated timeout", outcome_unknown=True)
        self.clock.now += self.delay
        self.writes.append(command.op)
        return self._apply(command)

    def grant_lease(self, ttl: float, *, timeout: float | None = None) -> Lease:
        return Lease.grant(self, ttl, timeout, clock=self.clock)

    def transaction(self, compare: Iterable[Any] = (), success: Iterable[Any] = (),
                    failure: Iterable[Any] = (), *, timeout: float | None = None) -> Any:
        success, failure = list(success), list(failure)
        result = self.propose(Command(op="txn", txn=txn_mod.build(compare, success, failure)))
        if result[0] == "no_lease":
            raise LeaseNotFoundError(result[1])
        return txn_mod.to_result(result, success, failure)

    def watch(self, prefix: str = "", start_revision: int | None = None) -> Watcher:
        return self.hub.watch(prefix, start_revision)

    def get_state(self, consistency: str = "linearizable", *,
                  keys: Iterable[str] | None = None) -> Any:
        return self.machine.snapshot(keys)

    def has_lease(self, lease_id: int) -> bool:
        return self.machine.has_lease(lease_id)

    # -- what the test drives ----------------------------------------------------------------
    def _apply(self, command: Command) -> tuple:
        self.index += 1
        return self.machine.apply_at(self.index, command.encode())

    def tick(self, seconds: float) -> list[int]:
        """Let ``seconds`` pass, then run the leader's expirer; the leases it expired."""
        self.clock.now += seconds
        return self.expirer.run_once()

    def elect(self) -> None:
        """A new leader term: every lease countdown restarts."""
        self.term += 1
        self.expirer.observe_leadership()


@dataclass(frozen=True)
class HoldSample:
    """At instant ``at``, lock object ``owner`` believed it held the lock with ``token``."""

    at: float
    owner: str
    token: int


@dataclass(frozen=True)
class LockViolation:
    """Two holders at once (``kind='overlap'``), a token going backwards (``'order'``), or a
    token shared by two owners (``'shared'``)."""

    kind: str
    detail: str


def check_lock_history(samples: Sequence[HoldSample]) -> list[LockViolation]:
    """Mutual exclusion and fencing order over the holders' own beliefs.

    At any one time at most one owner may believe it holds the lock; tokens believed over
    time never decrease; a token belongs to one owner.
    """
    violations: list[LockViolation] = []
    by_time: dict[float, set[tuple[str, int]]] = {}
    owner_of: dict[int, str] = {}
    for sample in samples:
        by_time.setdefault(sample.at, set()).add((sample.owner, sample.token))
        if owner_of.setdefault(sample.token, sample.owner) != sample.owner:
            violations.append(LockViolation("shared", f"token {sample.token} held by "
                                            f"{owner_of[sample.token]} and {sample.owner}"))
    highest = 0
    for at in sorted(by_time):
        holders = by_time[at]
        if len({owner for owner, _ in holders}) > 1:
            violations.append(LockViolation("overlap", f"at {at}: {sorted(holders)}"))
        top = max(token for _, token in holders)
        if top < highest:
            violations.append(LockViolation("order", f"at {at}: token {top} after {highest}"))
        highest = max(highest, top)
    return violations
