"""Leader lease and leader stickiness, on the monotonic clock.

A leader may act only while a majority acknowledged a lease ping it *sent* less than
``duration`` ago; followers that answered refuse to vote for anyone else (and push back
their own election timer) for the minimum election timeout after hearing from it. Since
``duration`` < minimum election timeout, the old leader's lease ends before any new
leader can be elected: no two nodes act as leader at the same time.

Defect 5: PySyncObj has neither, so an isolated or paused leader keeps acting as leader.
Defect 8: this lease (with the term as fencing token) is what hastate offers instead of
PySyncObj's ``ReplLockManager``, which trusts the client's wall clock and has no token.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Iterable

Clock = Callable[[], float]


class LeaderLease:
    """Leader side: the majority-acknowledged lease for the current term."""

    def __init__(self, duration: float, peers: Iterable[Hashable],
                 clock: Clock = time.monotonic) -> None:
        self.duration = duration
        self._peers = frozenset(peers)
        self._clock = clock
        self._term: int | None = None
        self._acks: dict[Hashable, float] = {}
        self._not_before = 0.0

    def start(self, term: int) -> None:
        """Begin collecting acknowledgements for ``term`` (this node just became leader)."""
        self._term = term
        self._acks = {}
        self._not_before = 0.0

    def end(self) -> None:
        """Drop the lease at once (leadership lost)."""
        self._term = None
        self._acks = {}

    def suspend(self) -> None:
        """Give the lease up now and count only pings sent from now on (leadership transfer)."""
        self._acks = {}
        self._not_before = self._clock()

    def set_peers(self, peers: Iterable[Hashable]) -> None:
        """The other voters changed (membership change): count only their acknowledgements.

        Safe mid-term because configurations change one server at a time, so a majority
        of the old configuration and one of the new always share a node.
        """
        self._peers = frozenset(peers)

    def on_ack(self, peer: Hashable, term: int, sent: float) -> None:
        """Record that ``peer`` acknowledged the ping this node sent at ``sent`` in ``term``."""
        if term != self._term or sent < self._not_before:
            return
        if sent > self._acks.get(peer, float("-inf")):
            self._acks[peer] = sent

    def acked_since(self, sent: float) -> set[Hashable]:
        """Peers that acknowledged a ping sent at or after ``sent`` in this term (any thread)."""
        return {peer for peer, at in list(self._acks.items()) if at >= sent}

    @property
    def term(self) -> int | None:
        """Term the lease is collected for, or None when this node is not leader."""
        return self._term

    def expires_at(self) -> float:
        """Monotonic time at which the lease ends (-inf when no majority acknowledged)."""
        if self._term is None:
            return float("-inf")
        needed = (len(self._peers) + 1) // 2  # followers needed besides this node
        if needed == 0:
            return self._clock() + self.duration
        sent = sorted((t for p, t in self._acks.items() if p in self._peers), reverse=True)
        if len(sent) < needed:
            return float("-inf")
        return sent[needed - 1] + self.duration

    def holds(self) -> bool:
        """True while this node may act as leader."""
        return self.expires_at() > self._clock()

    def remaining(self) -> float:
        """Seconds of lease left (0 when not held)."""
        return max(0.0, self.expires_at() - self._clock())


class Stickiness:
    """Follower side: refuse votes while a live leader was heard from recently."""

    def __init__(self, min_timeout: float, clock: Clock = time.monotonic) -> None:
        self.min_timeout = min_timeout
        self._clock = clock
        # A (re)started node may have acknowledged a lease just before it went down, so it
        # treats its own start as contact with a leader and votes only after min_timeout.
        self._heard_at = clock()
        self._transfer: tuple[int, str] | None = None

    def heard_from_leader(self) -> None:
        """A message from the current leader arrived."""
        self._heard_at = self._clock()

    def allow_transfer(self, term: int, target: str) -> None:
        """The leader announced a transfer to ``target``: its election at ``term`` + 1 is fine."""
        self._transfer = (term + 1, target)

    def may_vote(self, term: int, candidate: str) -> bool:
        """Whether a vote request from ``candidate`` for ``term`` may be considered at all."""
        if self._transfer == (term, candidate):
            return True
        return self._clock() - self._heard_at >= self.min_timeout
