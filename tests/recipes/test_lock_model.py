"""The lock recipe against a pure model on a fake clock, and the lock history checker.

Three Lock objects contend through :class:`lock_sim.SimHost` (a real state machine, the real
lease expirer as the leader's clock). The model is written from the recipe's contract: a
free lock is granted with a token larger than every earlier one; the holder keeps it while
it keeps its lease alive, the leader deletes it once the lease's TTL ran out since the later
of the last refresh and the leader's start; a holder believes it holds only until its own
count (from the last refresh it sent) runs out. The checker must pass every history of the
real recipe and catch a holder that keeps acting after its lease may have expired.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings, strategies as st

from hastate.errors import LockHeldError, LockLostError, WriteError
from hastate.recipes.lock import Lock, LockGrant
from hastate.state import leases, txn

from lock_sim import HoldSample, SimHost, check_lock_history

OWNERS = ("a", "b", "c")
TTL = 3.0


class Model:
    """What the lock promises, with every proposal applied at the moment it is sent."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.token = 0
        self.refreshed: dict[str, float] = {}   # owner -> when it last granted or kept
        #                                          alive the lease of its grant
        self.leader_since = 0.0
        self.highest = 0
        self.orphans: set[str] = set()  # holders whose key was deleted by hand: they learn
        #                                 so at their next step, and meanwhile still believe

    def learns(self, owner: str) -> None:
        self.orphans.discard(owner)

    def expire(self, now: float) -> None:
        if self.holder is not None and \
                now >= max(self.refreshed[self.holder], self.leader_since) + TTL:
            self.holder = None

    def believes(self, owner: str, now: float) -> bool:
        return (owner == self.holder or owner in self.orphans) and \
            now < self.refreshed[owner] + TTL


class BelievesUntilToldLock(Lock):
    """The bug the checker must catch: acts on its grant until it learns it is gone,
    ignoring that its lease may have expired meanwhile."""

    @property
    def token(self) -> int | None:
        grant = self.grant
        return grant.token if grant is not None else None


def make_locks(host: SimHost, cls: type[Lock] = Lock) -> dict[str, Lock]:
    locks = {}
    for owner in OWNERS:
        lock = cls(host, "L", ttl=TTL, clock=host.clock, sleep=host.clock.sleep)
        lock.owner = owner                          # readable names in failures
        locks[owner] = lock
    return locks


LOCK_STEPS = st.one_of(
    st.tuples(st.sampled_from(["acquire", "renew", "release"]), st.sampled_from(OWNERS)),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 1.0, TTL / 2, TTL, 2 * TTL])),
    st.tuples(st.just("elect"), st.just("")))
#: With an operator deleting the key by hand (a forced release: only fencing protects then).
STEPS = st.lists(st.one_of(LOCK_STEPS, st.tuples(st.just("delete"), st.just(""))),
                 max_size=40)


@settings(max_examples=1000, deadline=None)
@given(STEPS)
@example([("acquire", "a"), ("tick", 1.5), ("elect", ""), ("tick", 1.5), ("acquire", "b"),
          ("tick", 1.5), ("acquire", "b")])
@example([("acquire", "a"), ("delete", ""), ("renew", "a"), ("acquire", "b"),
          ("release", "a"), ("release", "b"), ("acquire", "a")])
def test_recipe_follows_the_model(steps: list[tuple[str, object]]) -> None:
    host, model = SimHost(), Model()
    locks = make_locks(host)
    for op, arg in steps:
        now = host.clock.now
        if op == "tick":
            host.tick(arg)
            model.expire(host.clock.now)
        elif op == "elect":
            host.elect()
            model.leader_since = now
        elif op == "delete":
            host.transaction((), [txn.delete("locks/L")])
            model.orphans |= {model.holder} - {None}
            model.holder = None
        elif op == "acquire":
            lock = locks[arg]
            model.learns(arg)
            if model.holder in (None, arg):
                grant = lock.acquire(blocking=False)
                if model.holder is None:            # a new grant: a larger token
                    assert grant.token > model.highest
                    model.highest = model.token = grant.token
                assert grant == LockGrant(model.token, arg, grant.lease, now + TTL)
                model.holder, model.refreshed[arg] = arg, now
            else:
                with pytest.raises(LockHeldError) as info:
                    lock.acquire(blocking=False)
                assert (info.value.owner, info.value.token) == (model.holder, model.token)
        elif op == "renew":
            lock = locks[arg]
            model.learns(arg)
            if model.holder == arg and lock.grant is not None:
                assert lock.renew().token == model.token
                model.refreshed[arg] = now
            else:
                with pytest.raises(LockLostError):
                    lock.renew()
        else:
            model.learns(arg)
            freed = locks[arg].release()
            assert freed == (model.holder == arg)
            if freed:
                model.holder = None
        for owner, lock in locks.items():
            assert lock.is_held() == model.believes(owner, host.clock.now), (owner, op, arg)
        holder = locks["a"].holder()
        assert (holder.owner, holder.token) == (model.holder, model.token) \
            if model.holder is not None else holder is None


def run_history(steps: list[tuple[str, object]], cls: type[Lock] = Lock,
                delay: float = 0.0) -> list[HoldSample]:
    """Drive three locks; after every step, sample who believes it holds the lock (steps
    may take no fake time, so the instant of a sample is its step's number)."""
    host = SimHost()
    host.delay = delay
    locks = make_locks(host, cls)
    samples: list[HoldSample] = []
    for step, (op, arg) in enumerate(steps):
        if op == "tick":
            host.tick(arg)
        elif op == "elect":
            host.elect()
        else:
            try:
                getattr(locks[arg], op)(**({"blocking": False} if op == "acquire" else {}))
            except (LockHeldError, LockLostError, WriteError):
                pass
        for owner, lock in locks.items():
            token = lock.token
            if token is not None:
                samples.append(HoldSample(step, owner, token))
    return samples


@settings(max_examples=600, deadline=None)
@given(st.lists(LOCK_STEPS, max_size=40), st.sampled_from([0.0, 0.1, 0.7, TTL / 2]))
def test_histories_of_the_recipe_pass_the_checker_whatever_the_commit_delay(
        steps: list[tuple[str, object]], delay: float) -> None:
    assert check_lock_history(run_history(steps, delay=delay)) == []


def test_a_holder_acting_past_its_lease_is_caught() -> None:
    """Negative control: ``a`` stops keeping its lease alive but keeps acting; once the
    leader expires the lease, ``b`` is granted the lock and both act at the same time."""
    steps = [("acquire", "a"), ("tick", TTL), ("acquire", "b")]
    assert check_lock_history(run_history(steps)) == []
    caught = check_lock_history(run_history(steps, BelievesUntilToldLock))
    assert [v.kind for v in caught] == ["overlap"] and "'a'" in caught[0].detail


def test_checker_flags_shared_and_backward_tokens() -> None:
    assert [v.kind for v in check_lock_history([HoldSample(1.0, "a", 5),
                                                HoldSample(2.0, "b", 5)])] == ["shared"]
    assert [v.kind for v in check_lock_history([HoldSample(1.0, "a", 5),
                                                HoldSample(2.0, "b", 4)])] == ["order"]


def test_a_lease_that_ends_before_the_put_is_replaced() -> None:
    host = SimHost()
    lock = Lock(host, "L", ttl=TTL, clock=host.clock, sleep=host.clock.sleep)
    honest = host.transaction
    ended: list[int] = []

    def lease_ends_first(*args: object, **kwargs: object) -> object:
        host.transaction = honest                   # type: ignore[method-assign]
        ended.append(lock._lease.id)
        host.propose(leases.revoke_command(ended[0]))
        return honest(*args, **kwargs)

    host.transaction = lease_ends_first             # type: ignore[method-assign]
    grant = lock.acquire(blocking=False)
    assert grant.lease != ended[0] and lock.token == grant.token
    assert host.get_state("local", keys=["locks/L"]) == {
        "locks/L": {"owner": lock.owner, "lease": grant.lease}}
