"""The no-early-expiry checker passes histories of the real expirer under leader pauses and
changes, and catches a leader that expires by its own wall clock across a pause.

Histories come from three real state machines and their :class:`LeaseExpirer` on one fake
clock; a paused node applies nothing and runs nothing until it resumes.
"""

from __future__ import annotations

from typing import Any, Sequence

from hypothesis import given, settings, strategies as st

from hastate.state import leases, txn
from hastate.state.codec import Command
from hastate.state.housekeeping import LeaseExpirer
from hastate.state.machine import ReplicatedState

from .lease_checker import LeaseHistory, check_no_early_expiry, shared_grants


class WallClockExpirer:
    """The bug the checker must catch: deadlines from the leader's own clock at grant time,
    kept across a pause, expiring whatever the table says when it wakes up."""

    def __init__(self, cluster: "Sim", node: int) -> None:
        self.cluster, self.node = cluster, node
        self.deadline: dict[int, float] = {}

    def granted(self, lease: int, ttl: float) -> None:
        self.deadline[lease] = self.cluster.now + ttl

    def run_once(self) -> None:
        table = self.cluster.replicas[self.node].leases()
        due = [(lease, table[lease].refreshed) for lease, deadline in self.deadline.items()
               if lease in table and self.cluster.now >= deadline]
        if due:
            self.cluster.apply(leases.expire_command(due))


class Sim:
    """Three replicas, one fake clock, a client that records what it was promised."""

    def __init__(self) -> None:
        self.now = 0.0
        self.replicas = [ReplicatedState() for _ in range(3)]
        self.index = 0
        self.term, self.leader = 1, 0
        self.paused: set[int] = set()
        self.history: dict[int, LeaseHistory] = {}
        self.lease_of: dict[str, int] = {}        # key -> the lease it was put with
        self.expirers = [LeaseExpirer(r, leader_term=self._term_of(i),
                                      propose=self.apply, clock=lambda: self.now)
                         for i, r in enumerate(self.replicas)]
        for i, replica in enumerate(self.replicas):
            replica.add_change_listener(self._watch(f"n{i}"))
        self.expirers[0].observe_leadership()

    def _term_of(self, i: int):
        return lambda: self.term if self.leader == i and i not in self.paused else None

    def _watch(self, node: str) -> Any:
        sim = self

        class Watch:
            def changed(self, revision: int, changes: Sequence[Any]) -> None:
                for change in changes:
                    if change.type == "delete":
                        history = sim.history[sim.lease_of[change.key]]
                        history.deletes.append((node, change.key, sim.now))

            def reset(self, *_: Any) -> None: ...

            def export(self) -> list:
                return []

        return Watch()

    def apply(self, command: Command) -> tuple:
        self.index += 1
        return [r.apply_at(self.index, command.encode()) for r in self.replicas][0]

    def grant(self, ttl: float, key: str) -> int:
        lease = self.apply(leases.grant_command(ttl))[1]
        self.history[lease] = LeaseHistory(ttl, [self.now])
        self.lease_of[key] = lease
        self.apply(Command(op="txn", txn=txn.build([], [txn.put(key, 1, lease=lease)], [])))
        return lease

    def keep_alive(self, lease: int) -> None:
        sent = self.now
        if self.apply(leases.keepalive_command(lease))[1]:
            self.history[lease].refreshes.append(sent)

    def elect(self, node: int) -> None:
        self.term += 1
        self.leader = node
        self.expirers[node].observe_leadership()

    def check(self) -> None:
        for i, expirer in enumerate(self.expirers):
            if i not in self.paused:
                expirer.run_once()


def test_real_expirer_is_never_early_across_a_leader_pause_and_the_buggy_one_is_caught() -> None:
    for buggy in (False, True):
        sim = Sim()
        wall = WallClockExpirer(sim, 0)
        lease = sim.grant(10.0, "inflight/x")
        wall.granted(lease, 10.0)
        sim.now = 1.0
        sim.paused.add(0)                       # the leader is paused (SIGSTOP, long GC)
        sim.now = 3.0
        sim.elect(1)                            # the others elect a new leader
        sim.now = 8.0
        sim.keep_alive(lease)                   # the bot keeps its lease alive through it
        sim.now = 12.0
        sim.paused.discard(0)                   # the old leader wakes up
        if buggy:
            wall.run_once()
        sim.check()
        for step in range(1, 30):
            sim.now = 12.0 + step
            sim.check()
        result = check_no_early_expiry(sim.history)
        assert result.deletes_checked == 3
        if buggy:
            assert not result.ok and "6.000s early" in result.summary()
            assert {v.seen_at for v in result.violations} == {12.0}
            assert result.violations[0].early_by == 6.0
        else:
            assert result.ok, result.summary()
            assert {seen for _, _, seen in sim.history[lease].deletes} == {18.0}


STEPS = st.lists(st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 2.5])),
    st.tuples(st.just("keep_alive"), st.integers(0, 3)),
    st.tuples(st.just("grant"), st.sampled_from([1.0, 3.0])),
    st.tuples(st.just("pause_leader"), st.integers(0, 2)),
    st.tuples(st.just("resume"), st.integers(0, 2)),
    st.tuples(st.just("check"), st.just(0)),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(STEPS)
def test_histories_of_the_real_expirer_pass_under_pauses_and_elections(steps: list) -> None:
    sim = Sim()
    granted: list[int] = []
    for kind, arg in steps:
        if kind == "advance":
            sim.now += arg
        elif kind == "keep_alive" and granted:
            sim.keep_alive(granted[arg % len(granted)])
        elif kind == "grant":
            granted.append(sim.grant(arg, f"k{len(granted)}"))
        elif kind == "pause_leader":
            sim.paused.add(sim.leader)
            candidates = [n for n in range(3) if n not in sim.paused]
            if len(candidates) >= 2:          # a majority elects one of them
                sim.elect(candidates[arg % len(candidates)])
        elif kind == "resume":
            sim.paused.discard(arg)
        sim.check()
    sim.paused.clear()
    sim.now += 100.0
    sim.check()
    result = check_no_early_expiry(sim.history)
    assert result.ok, result.summary()
    assert all(replica.leases() == {} for replica in sim.replicas)


def test_revoke_exempts_and_a_hand_made_early_delete_is_flagged() -> None:
    early = LeaseHistory(5.0, [0.0, 2.0], None, [("n1", "k", 6.5)])
    assert not check_no_early_expiry({1: early}).ok
    revoked = LeaseHistory(5.0, [0.0, 2.0], 6.0, [("n1", "k", 6.5)])
    assert check_no_early_expiry({1: revoked}).ok
    on_time = LeaseHistory(5.0, [0.0, 2.0], None, [("n1", "k", 7.0)])
    assert check_no_early_expiry({1: on_time}).ok


def test_a_lease_id_returned_by_two_grants_is_flagged() -> None:
    assert shared_grants([(3, "n0b0"), (4, "n1b0"), (5, "n0b0")]) == []
    assert shared_grants([(3, "n0b0"), (4, "n1b0"), (3, "n2b1")]) == \
        ["lease 3 granted 2 times (n0b0, n2b1)"]
