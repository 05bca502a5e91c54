"""Leadership on etcd: a handover to a named target, from the leader or from anyone else."""

from __future__ import annotations

import pytest

from hastate.errors import FailoverError
from hastate.testing import wait_for

from .conftest import Bots

IDS = ["instance-1", "instance-2", "instance-3"]


def start_three(bots: Bots, name: str) -> dict:
    config = bots.config(name)
    managers = {i: bots.start(config, i) for i in IDS}
    wait_for(lambda: [sm.is_leader() for sm in managers.values()].count(True) == 1,
             timeout=20, what="one leader")
    return managers


def test_the_leader_hands_over_to_the_named_target_and_nobody_else_leads(bots: Bots) -> None:
    managers = start_three(bots, "handover")
    leader_id = next(i for i, sm in managers.items() if sm.is_leader())
    target, bystander = [i for i in IDS if i != leader_id]
    token = managers[leader_id].fencing_token()
    became: dict[str, list[int]] = {i: [] for i in IDS}
    for i, sm in managers.items():
        sm.watch_leader(on_become_leader=lambda t, i=i: became[i].append(t))
    wait_for(lambda: became[leader_id], timeout=10)        # told at once: it already leads

    seconds = managers[leader_id].trigger_failover(target)
    assert seconds >= 0 and not managers[leader_id].is_leader()
    wait_for(lambda: managers[target].is_leader(), timeout=20, what=f"{target} leads")
    assert managers[target].fencing_token() > token
    assert managers[leader_id].fencing_token() is None
    wait_for(lambda: {sm.leader() for sm in managers.values()} == {target}, timeout=10,
             what="every bot's mirror names the new leader")
    assert became[bystander] == []                         # only the named target campaigned


def test_a_handover_asked_by_a_non_leader_moves_leadership_too(bots: Bots) -> None:
    managers = start_three(bots, "handover-asked")
    leader_id = next(i for i, sm in managers.items() if sm.is_leader())
    asker, target = [i for i in IDS if i != leader_id]
    token = managers[leader_id].fencing_token()
    managers[asker].trigger_failover(target)
    wait_for(lambda: managers[target].is_leader() and not managers[leader_id].is_leader(),
             timeout=20, what=f"{target} leads")
    assert managers[target].fencing_token() > token
    assert [sm.is_leader() for sm in managers.values()].count(True) == 1


def test_a_handover_to_an_instance_without_a_session_is_refused(bots: Bots) -> None:
    config = bots.config("handover-absent")
    leader = bots.start(config, "instance-1")
    wait_for(leader.is_leader, timeout=20)
    with pytest.raises(FailoverError, match="instance-3"):
        leader.trigger_failover("instance-3")
    assert leader.is_leader()


def test_an_unhealthy_leader_hands_over_to_a_healthy_instance(bots: Bots) -> None:
    config = bots.config("health")
    healthy = {i: True for i in IDS}
    managers = {i: bots.start(config, i) for i in IDS}
    for i, sm in managers.items():
        sm.configure_failover(health_check_interval=0.1, failover_timeout=0.5,
                              health_check=lambda i=i: healthy[i])
    leader_id = wait_for(lambda: next((i for i, sm in managers.items() if sm.is_leader()),
                                      None), timeout=20, what="a leader")
    sick = next(i for i in IDS if i != leader_id)
    healthy[sick] = False                  # it must be neither picked nor campaign
    wait_for(lambda: sick not in {i for _, i in managers[leader_id].engine.failover_candidates(
        0.0)}, timeout=10, what=f"{sick} reported unhealthy")
    healthy[leader_id] = False
    wait_for(lambda: any(sm.is_leader() for i, sm in managers.items() if i != leader_id),
             timeout=20, what="a healthy instance leads")
    new = next(i for i, sm in managers.items() if sm.is_leader())
    assert new not in (leader_id, sick)
    assert managers[new].status()["failovers"] == {"manual": 0, "health": 0}
    wait_for(lambda: managers[leader_id].status()["failovers"]["health"] == 1, timeout=10,
             what="the handover counted as a health failover")


def test_a_handover_that_fails_half_way_releases_leadership(bots: Bots) -> None:
    from chaos.proxy import Mode, TcpProxy

    from hastate.errors import HAStateError
    from hastate.testing.etcd import write_cluster_file
    with TcpProxy() as proxy:
        proxy.add_link("leader", bots.store.client_ports[0])
        proxied = write_cluster_file(bots.workdir / "halfway-proxied.toml",
                                     [f"http://127.0.0.1:{proxy.port('leader')}"],
                                     name="halfway", discover_members=False,
                                     request_timeout=0.5)
        leader = bots.start(proxied, "instance-1")
        wait_for(leader.is_leader, timeout=20, what="instance-1 leads")
        others = {i: bots.start(bots.config("halfway"), i) for i in IDS[1:]}
        token = leader.fencing_token()
        wait_for(lambda: len(leader.engine.mirror.member_entries()) == 3, timeout=10)
        proxy.configure("leader", mode=Mode.DROP)
        with pytest.raises(HAStateError):
            leader.trigger_failover("instance-2", timeout=5)
        assert not leader.is_leader()                       # it stopped acting first
        proxy.configure("leader", mode=Mode.PASS)
        managers = {"instance-1": leader, **others}
        wait_for(lambda: [sm.is_leader() for sm in managers.values()].count(True) == 1,
                 timeout=20, what="leadership released and taken again")
        new = next(sm for sm in managers.values() if sm.is_leader())
        assert new.fencing_token() > token
