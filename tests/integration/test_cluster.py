"""End to end against real node processes on loopback: the StateManager promises."""

from __future__ import annotations

import datetime as dt
import decimal
import signal
import subprocess
import sys
import threading
import time

import pytest

from hastate import NoQuorumError, ReadError, StateManager, WriteError
from hastate.errors import ConfigError, ConflictError
from hastate.testing import BackgroundWriter, wait_for

pytestmark = pytest.mark.integration

BOT_STATE = {
    "last_processed_timestamp": dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.timezone.utc),
    "active_positions": [{"symbol": "BTC-USD", "qty": decimal.Decimal("0.25")}],
    "model_version": "v1.2.3",
}


def same_everywhere(cluster, nodes=("instance-2", "instance-3")) -> bool:
    want = cluster.sm.machine.state_hash()
    return all((cluster.state(n, "local") or {}).get("state_hash") == want for n in nodes)


def test_write_replicates_to_every_node_with_exact_types(cluster) -> None:
    revision = cluster.sm.save_state(BOT_STATE)
    assert cluster.sm.get_state("local", with_revision=True) == (BOT_STATE, revision)
    wait_for(lambda: same_everywhere(cluster))
    remote = cluster.state("instance-3", "local")["state"]
    assert remote["model_version"] == "v1.2.3"
    assert remote["active_positions"][0]["qty"] == "0.25"       # Decimal, JSON-rendered


def test_write_from_a_follower_is_forwarded_and_applied_locally(cluster) -> None:
    cluster.make_leader("instance-2")
    assert not cluster.sm.is_leader() and cluster.sm.leader() == "instance-2"
    cluster.sm.save_state({"model_version": "v2"})
    assert cluster.sm.get_state("local")["model_version"] == "v2"   # applied before returning
    assert cluster.state("instance-2")["state"]["model_version"] == "v2"
    rev = cluster.sm.revisions()["model_version"]
    cluster.sm.compare_and_set("model_version", "v3", rev)
    with pytest.raises(ConflictError, match="expected revision"):
        cluster.sm.compare_and_set("model_version", "v4", rev)
    assert cluster.sm.get_state()["model_version"] == "v3"


def test_leader_sigkill_elects_new_leader_without_losing_acked_writes(cluster) -> None:
    cluster.make_leader("instance-2")
    acked = [cluster.sm.save_state({f"k{i}": i}) and i for i in range(50)]
    cluster.kill("instance-2", signal.SIGKILL)
    new_leader = wait_for(lambda: cluster.sm.leader() if cluster.sm.leader() in
                          ("instance-1", "instance-3") and (cluster.sm.is_leader() or
                          (cluster.status("instance-3") or {}).get("is_leader")) else None)
    assert new_leader in ("instance-1", "instance-3")
    cluster.sm.save_state({"after": True})
    state = cluster.sm.get_state()
    assert all(state[f"k{i}"] == i for i in acked) and state["after"] is True
    cluster.start("instance-2")                                # restart from its data_dir
    wait_for(lambda: same_everywhere(cluster, ("instance-2", "instance-3")), timeout=20)


def test_restart_of_every_node_from_data_dir_keeps_state(cluster) -> None:
    for i in range(20):
        cluster.sm.save_state({"n": i, f"key{i}": "x" * i})
    before = cluster.sm.get_state()
    wait_for(lambda: same_everywhere(cluster))
    cluster.stop_all()
    cluster.sm.stop()
    cluster.start_embedded(http=False)
    cluster.start("instance-2")
    cluster.start("instance-3")
    cluster.sm.wait_ready(20)
    assert cluster.sm.get_state() == before


def test_trigger_failover_to_named_node_while_writer_runs(cluster) -> None:
    with BackgroundWriter(cluster.sm) as writer:
        time.sleep(0.5)
        for target in ("instance-3", "instance-2", "instance-1"):
            cluster.sm.trigger_failover(target, timeout=15)
            assert cluster.sm.leader() == target
            time.sleep(0.3)
    assert writer.errors == [] and len(writer.acked) > 50
    assert writer.missing_from(cluster.sm.get_state()) == []
    assert cluster.sm.is_leader()


def test_watch_leader_fires_once_per_transition_off_the_raft_thread(cluster) -> None:
    events: list[tuple[str, object, str]] = []
    cluster.sm.watch_leader(
        on_become_leader=lambda token: events.append(("up", token, threading.current_thread().name)),
        on_lose_leadership=lambda: events.append(("down", None, threading.current_thread().name)))
    for target in ("instance-2", "instance-1", "instance-3", "instance-1"):
        cluster.sm.trigger_failover(target, timeout=15)
        time.sleep(0.1)
    cluster.sm.trigger_failover("instance-2", timeout=15)
    wait_for(lambda: events and events[-1][0] == "down")
    kinds = [e[0] for e in events]
    assert kinds[-4:] == ["up", "down", "up", "down"]
    assert all(a != b for a, b in zip(kinds, kinds[1:]))          # strictly alternating
    tokens = [e[1] for e in events if e[0] == "up"]
    assert tokens == sorted(set(tokens))                           # fencing tokens increase
    assert all(not e[2].startswith("hastate-raft") for e in events)


def test_recovery_callback_gets_caught_up_state_before_acting(cluster) -> None:
    cluster.make_leader("instance-2")
    cluster.sm.save_state({"tick": 41})
    seen: list[dict] = []
    cluster.sm.configure_failover(health_check_interval=0.2, failover_timeout=30,
                                  recovery_callback=seen.append)
    cluster.sm.trigger_failover("instance-1", timeout=15)
    wait_for(lambda: seen)
    assert seen[0]["tick"] == 41


def test_unhealthy_leader_hands_over_and_unhealthy_follower_stays_out(cluster) -> None:
    healthy = [True]
    cluster.sm.configure_failover(health_check_interval=0.1, failover_timeout=0.5,
                                  health_check=lambda: healthy[0])
    cluster.make_leader("instance-1")
    healthy[0] = False
    wait_for(lambda: cluster.sm.leader() in ("instance-2", "instance-3"), timeout=20)
    with pytest.raises(Exception, match="did not move|refus|unknown"):
        cluster.sm.trigger_failover("instance-1", timeout=3)     # a sick node refuses to lead
    assert not cluster.sm.is_leader()


def test_linearizable_read_refuses_without_quorum_local_read_answers(cluster) -> None:
    cluster.make_leader("instance-2")
    cluster.sm.save_state({"price": decimal.Decimal("1.5")})
    for node_id in ("instance-2", "instance-3"):
        cluster.procs[node_id].send_signal(signal.SIGSTOP)
    try:
        assert cluster.sm.get_state("local") == {"price": decimal.Decimal("1.5")}
        with pytest.raises(ReadError):
            cluster.sm.get_state(timeout=1.5)
        with pytest.raises((NoQuorumError, WriteError)) as info:
            cluster.sm.save_state({"price": 2}, timeout=1.5)
        assert info.value.outcome_unknown in (True, False)
        assert not cluster.sm.is_leader()
    finally:
        cluster.resume_all()
    assert wait_for(lambda: cluster.sm.get_state(timeout=10).get("price") in (2, decimal.Decimal("1.5")))


def test_non_encodable_value_is_refused_before_anything_is_proposed(cluster) -> None:
    applied = cluster.sm.machine.applied_index
    with pytest.raises(TypeError, match=r"'positions'\[0\].*set"):
        cluster.sm.save_state({"ok": 1, "positions": [{1, 2}]})
    time.sleep(0.2)
    assert cluster.sm.machine.applied_index == applied and "ok" not in cluster.sm.get_state()


def test_unknown_instance_id_is_a_clear_error(cluster) -> None:
    with pytest.raises(ConfigError, match="unknown node id 'instance-9'"):
        StateManager.from_config(cluster.config_path, "instance-9")
    out = subprocess.run([sys.executable, "-m", "hastate", "node", "run", "--config",
                          str(cluster.config_path), "--id", "instance-9"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "unknown node id 'instance-9'" in out.stderr


def test_tls_cluster_from_config_replicates_and_fails_over(tmp_path) -> None:
    from hastate.testing import LocalCluster
    with LocalCluster(tmp_path, 3, name="tls", transport="tls") as cluster:
        assert (tmp_path / "tls" / "instance-1.key").stat().st_mode & 0o077 == 0
        cluster.start("instance-2")
        cluster.start("instance-3")
        sm = StateManager.from_config(cluster.config_path, "instance-1")
        try:
            sm.start(wait_ready=20)
            assert sm.engine.transport.mode == "tls"
            sm.trigger_failover("instance-2", timeout=15)
            sm.save_state({"secret_sauce": "v1"})
            cluster.kill("instance-2", signal.SIGKILL)
            wait_for(lambda: sm.leader() in ("instance-1", "instance-3"))
            sm.save_state({"after": 1})
            assert cluster.state("instance-3")["state"] == {"secret_sauce": "v1", "after": 1}
        finally:
            sm.stop()


def test_write_on_an_isolated_node_fails_fast_with_no_quorum(cluster) -> None:
    cluster.make_leader("instance-1")
    for node_id in ("instance-2", "instance-3"):
        cluster.procs[node_id].send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(NoQuorumError, match="known no leader") as info:
            cluster.sm.save_state({"x": 1}, timeout=60)       # does not wait out 60 s
        assert info.value.outcome_unknown is True
        assert not cluster.sm.is_leader()
    finally:
        cluster.resume_all()
    wait_for(lambda: cluster.sm.leader() is not None)
    assert cluster.sm.get_state(timeout=15).get("x") in (None, 1)
