"""Leader lease and stickiness on a fake clock."""

from __future__ import annotations

from hastate.consensus.lease import LeaderLease, Stickiness


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


def test_lease_needs_a_majority_and_counts_from_send_time() -> None:
    clock = Clock()
    lease = LeaderLease(0.5, "bc", clock)
    lease.start(term=4)
    assert not lease.holds()                     # no follower answered yet
    lease.on_ack("b", 4, sent=clock.now - 0.1)   # ping sent 100 ms ago
    assert lease.holds()
    assert abs(lease.remaining() - 0.4) < 1e-9   # counted from the send time, not the ack
    clock.advance(0.41)
    assert not lease.holds()


def test_five_nodes_need_two_followers_and_take_the_older_ack() -> None:
    clock = Clock()
    lease = LeaderLease(1.0, "bcde", clock)
    lease.start(term=1)
    lease.on_ack("b", 1, clock.now)
    assert not lease.holds()
    lease.on_ack("c", 1, clock.now - 0.5)
    assert abs(lease.remaining() - 0.5) < 1e-9


def test_acks_from_other_terms_and_before_suspension_do_not_count() -> None:
    clock = Clock()
    lease = LeaderLease(1.0, "bc", clock)
    lease.start(term=2)
    lease.on_ack("b", 1, clock.now)
    assert not lease.holds()
    lease.on_ack("b", 2, clock.now)
    assert lease.holds()
    lease.suspend()
    assert not lease.holds()
    lease.on_ack("b", 2, clock.now - 0.01)       # ping sent before suspending
    assert not lease.holds()
    clock.advance(0.1)
    lease.on_ack("b", 2, clock.now)
    assert lease.holds()
    lease.end()
    assert not lease.holds() and lease.term is None


def test_single_node_always_holds_while_leader() -> None:
    lease = LeaderLease(1.0, (), Clock())
    lease.start(1)
    assert lease.holds()


def test_membership_change_counts_only_current_peers() -> None:
    clock = Clock()
    lease = LeaderLease(1.0, "bc", clock)
    lease.start(1)
    lease.on_ack("b", 1, clock.now)
    assert lease.holds()                         # 2 of 3
    lease.set_peers("bcd")                       # add d: 3 of 4 needed
    assert not lease.holds()
    lease.on_ack("d", 1, clock.now)
    assert lease.holds()
    lease.set_peers("cd")                        # remove b: its ack no longer counts
    lease.on_ack("x", 1, clock.now)              # not a member: ignored
    assert lease.holds()                         # d alone is a majority of {a, c, d}
    lease.set_peers("c")
    assert not lease.holds()                     # only c counts now, and it never answered


def test_stickiness_refuses_votes_within_min_timeout_except_announced_transfer() -> None:
    clock = Clock()
    sticky = Stickiness(1.0, clock)
    assert not sticky.may_vote(5, "x")           # just started: may have promised a lease
    clock.advance(1.0)
    assert sticky.may_vote(5, "x")
    sticky.heard_from_leader()
    clock.advance(0.5)
    assert not sticky.may_vote(6, "x")
    sticky.allow_transfer(term=5, target="y")
    assert sticky.may_vote(6, "y") and not sticky.may_vote(6, "x")


def test_acked_since_names_peers_that_answered_a_ping_sent_after_the_probe_began() -> None:
    clock = Clock()
    lease = LeaderLease(1.0, "bcd", clock)
    lease.start(1)
    lease.on_ack("b", 1, clock.now - 0.2)        # answered an older ping only
    probe = clock.now
    lease.on_ack("c", 1, clock.now + 0.01)
    assert lease.acked_since(probe) == {"c"}
    lease.on_ack("b", 1, clock.now + 0.02)
    assert lease.acked_since(probe) == {"b", "c"}
