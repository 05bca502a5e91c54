"""Health-driven failover decisions on a fake clock."""

from __future__ import annotations

from hastate.failover.policy import FailoverPolicy, FailoverSettings


def make(healthy: list[bool], leader: bool = True, target: str | None = "b"):
    clock = [0.0]
    moved: list[str] = []
    published: list[bool] = []
    policy = FailoverPolicy(FailoverSettings(1.0, 3.0), lambda: healthy[0],
                            is_leader=lambda: leader, publish=published.append,
                            pick_target=lambda: target, transfer=lambda t: moved.append(t) or 0.1,
                            clock=lambda: clock[0])
    return policy, clock, moved, published


def test_unhealthy_leader_hands_over_only_after_timeout() -> None:
    health = [False]
    policy, clock, moved, published = make(health)
    for t in (0.0, 1.0, 2.0):
        clock[0] = t
        policy.step()
    assert moved == [] and published == [False] * 3
    clock[0] = 3.0
    policy.step()
    assert moved == ["b"] and policy.failovers_total == 1


def test_recovery_resets_the_timer() -> None:
    health = [False]
    policy, clock, moved, _ = make(health)
    policy.step()
    clock[0] = 2.5
    health[0] = True
    policy.step()
    health[0] = False
    clock[0] = 4.0
    policy.step()
    assert moved == []


def test_follower_never_transfers_and_no_target_means_no_move() -> None:
    policy, clock, moved, _ = make([False], leader=False)
    clock[0] = 10
    policy.step()
    policy.step()
    assert moved == []
    policy, clock, moved, _ = make([False], target=None)
    policy.step()
    clock[0] = 10
    policy.step()
    assert moved == []


def test_raising_check_counts_as_failure() -> None:
    def boom() -> bool:
        raise RuntimeError("disk gone")
    policy = FailoverPolicy(FailoverSettings(1, 0), boom, is_leader=lambda: True,
                            publish=lambda ok: None, pick_target=lambda: "c",
                            transfer=lambda t: 0.0)
    policy.step()
    assert not policy.healthy and policy.failures_total == 1 and policy.failovers_total == 1
