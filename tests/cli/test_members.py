"""`hastate members add|remove` against real node processes, under writes.

instance-1 is embedded (the writer); the others are `hastate node run` processes. New nodes
are appended to the cluster file and started with `--join`, as docs/operations.md says.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from hastate.testing import BackgroundWriter, wait_for
from hastate.testing.embedded import EmbeddedCluster
from hastate.testing.metrics import sample

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path, 3, name="members").running() as c:
        yield c


def _voters(c: EmbeddedCluster, node_id: str) -> set[str]:
    st = c.status(node_id) or {}
    return {m["id"] for m in st.get("members", [])}


def _join(c: EmbeddedCluster) -> str:
    new = c.add_node()
    c.start(new, ["node", "run", "--join"])
    wait_for(lambda: c.status(new) is not None, what=f"{new} answering /status")
    return new


def test_add_and_remove_members_under_writes(cluster: EmbeddedCluster) -> None:
    c, config = cluster, str(cluster.config_path)
    with BackgroundWriter(c.sm, prefix="m") as writer:
        wait_for(lambda: len(writer.acked) > 20, what="writes flowing")
        new = _join(c)
        time.sleep(1.0)   # longer than an election timeout: a joiner must not campaign
        joiner = c.status(new)
        assert joiner["member"] is False and joiner["term"] == 0 and not joiner["is_leader"]
        assert sample(c.scrape(new), "hastate_voter", node=new) == 0

        out = c.cli("members", "add", new, "--config", config)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{new} added at commit index" in out.stdout and "caught up" in out.stdout
        assert _voters(c, c.wait_leader()) == {"instance-1", "instance-2", "instance-3", new}
        assert c.status(new)["member"] is True
        assert sample(c.scrape(new), "hastate_voter", node=new) == 1
        assert sample(c.scrape("instance-1"), "hastate_members", node="instance-1") == 4

        # Four voters: one dead follower leaves three, still a majority.
        victim = next(n for n in ("instance-2", "instance-3") if n != c.leader())
        c.kill(victim, signal.SIGKILL)
        count = len(writer.acked)
        wait_for(lambda: len(writer.acked) > count + 20, what="writes with one of four down")

        # Replace the dead region: removing it needs 2 of the remaining 3 up, and 3 are.
        out = c.cli("members", "remove", victim, "--config", config)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{victim} removed" in out.stdout
        survivors = {"instance-1", "instance-2", "instance-3", new} - {victim}
        wait_for(lambda: all(_voters(c, n) == survivors for n in survivors),
                 what="every member sees the new configuration")

        # Stop one more: two of three up. Removing a live follower would leave 1 of 2.
        if c.leader() != "instance-1":
            c.sm.trigger_failover("instance-1")
        other = sorted(survivors - {"instance-1"})[0]
        c.kill(other, signal.SIGKILL)
        last = next(iter(survivors - {"instance-1", other}))
        out = c.cli("members", "remove", last, "--config", config)
        assert out.returncode == 5 and "would lose quorum" in out.stderr, out.stderr
        # Adding a fifth would need 3 of 4 live members without it: refused too.
        fifth = _join(c)
        out = c.cli("members", "add", fifth, "--config", config)
        assert out.returncode == 5 and "would lose quorum" in out.stderr, out.stderr
        assert _voters(c, c.wait_leader()) == survivors
        count = len(writer.acked)
        wait_for(lambda: len(writer.acked) > count + 20, what="writes after the refusals")
    assert writer.errors == []
    assert writer.missing_from(c.sm.get_state()) == []


def test_removing_the_leader_hands_over_first_and_the_removed_node_stays_harmless(
        cluster: EmbeddedCluster) -> None:
    c, config = cluster, str(cluster.config_path)
    c.sm.trigger_failover("instance-2")
    out = c.cli("members", "remove", "instance-2", "--config", config)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "leadership moved instance-2 ->" in out.stdout and "instance-2 removed" in out.stdout
    leader = c.wait_leader(among=["instance-1", "instance-3"])
    term = c.status(leader)["term"]
    # instance-2 still runs, never learns it was removed and times out: the members refuse
    # its connections, so its elections cannot reach them.
    time.sleep(2.0)
    assert c.status("instance-2")["role"] != "leader"
    assert c.status(leader)["term"] == term and c.leader() == leader
    assert _voters(c, leader) == {"instance-1", "instance-3"}
    c.sm.save_state({"after": "removal"})
    assert c.sm.get_state()["after"] == "removal"
    listing = c.cli("members", "--config", config, "--json")
    rows = {r["id"]: r for r in json.loads(listing.stdout)}
    assert rows["instance-2"]["voter"] is False and rows["instance-3"]["voter"] is True
    assert listing.returncode == 0, listing.stderr   # health is judged on voters only
    status = c.cli("status", "--config", config)
    assert status.returncode == 0 and "all 2 nodes" in status.stderr + status.stdout, status


def test_membership_survives_a_full_restart(cluster: EmbeddedCluster) -> None:
    c, config = cluster, str(cluster.config_path)
    new = _join(c)
    assert c.cli("members", "add", new, "--config", config).returncode == 0
    follower = next(n for n in ("instance-2", "instance-3") if n != c.leader())
    assert c.cli("members", "remove", follower, "--config", config).returncode == 0
    c.sm.save_state({"k": 1})
    c.kill(follower, signal.SIGKILL)
    members = {"instance-1", "instance-2", "instance-3", new} - {follower}
    for node_id in members - {"instance-1"}:
        c.kill(node_id, signal.SIGKILL)
    c.stop_embedded()
    # Restart from the data dirs alone: the cluster file still lists the removed node, and
    # the new node is started without --join; the log's configuration wins.
    c.start_embedded()
    for node_id in members - {"instance-1"}:
        c.start(node_id)
    c.sm.wait_ready(20)
    assert {m.id for m in c.sm.members()} == members
    assert c.sm.get_state()["k"] == 1
    c.sm.save_state({"k": 2})
    wait_for(lambda: all((c.state(n, "local") or {}).get("state", {}).get("k") == 2
                         for n in members),
             what="the write reaching every member")


def test_admin_members_endpoint_needs_the_token_and_the_leader(cluster: EmbeddedCluster) -> None:
    c = cluster
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    body = {"op": "remove", "id": follower}
    assert c.post(leader, "/admin/members", body, token="wrong")[0] == 401
    code, answer = c.post(follower, "/admin/members", body, token=c.admin_token)
    assert code == 409 and answer["leader"] == leader
    code, answer = c.post(leader, "/admin/members", {"op": "add", "member": {"id": "x"}},
                          token=c.admin_token)
    assert code == 400 and "needs id and raft" in answer["error"]
    code, answer = c.post(leader, "/admin/members", {"op": "remove", "id": leader},
                          token=c.admin_token)
    assert code == 422 and "is the leader" in answer["error"]
    assert _voters(c, leader) == set(c.ids)                  # nothing changed


def test_tls_cluster_adds_a_node_with_a_certificate_from_the_existing_ca(
        tmp_path: Path) -> None:
    c = EmbeddedCluster(tmp_path, 3, name="members-tls", transport="tls")
    try:
        c.start_all()
        leader = c.wait_leader(timeout=20)
        new = _join(c)
        out = c.cli("members", "add", new, "--config", str(c.config_path))
        assert out.returncode == 0, out.stdout + out.stderr
        assert c.post(leader, "/admin/transfer-leadership", {"to": new})[0] == 200
        assert c.wait_leader() == new                      # it leads over mutual TLS
        assert _voters(c, new) == set(c.ids)
        out = c.cli("certs", "issue", "instance-9", "--ca-dir", str(tmp_path))
        assert out.returncode == 1 and "has no ca.pem or ca.key" in out.stderr
    finally:
        c.stop_all()


@pytest.mark.parametrize("term_changed", [False, True], ids=["same-term", "new-term"])
def test_replacement_seeded_from_the_snapshot_store_joins_and_converges(
        tmp_path: Path, term_changed: bool) -> None:
    """The "replace a dead region" runbook with restore_if_empty: the new node seeds itself
    from the newest snapshot and shipped log, then is added and catches up. ``new-term``:
    the snapshot is taken after a leader change with no write since, so the term it records
    is newer than the term of the entry it ends at."""
    cluster = EmbeddedCluster(tmp_path, 3, name="members-dr", ship_interval=0.5,
                         snapshot_store=f"file://{tmp_path / 'store'}", snapshot_interval=60,
                         restore_if_empty=True)
    with cluster.running() as c:
        config = str(c.config_path)
        for i in range(300):
            c.sm.save_state({f"k{i}": i})
        time.sleep(1.5)                                  # three ship intervals
        if term_changed:
            c.sm.trigger_failover("instance-2" if c.leader() != "instance-2" else "instance-3")
        leader = c.wait_leader()
        assert c.post(leader, "/admin/snapshot", {})[0] == 200
        dead = next(n for n in ("instance-2", "instance-3") if n != leader)
        c.kill(dead, signal.SIGKILL)
        assert c.cli("members", "remove", dead, "--config", config).returncode == 0
        new = _join(c)
        seeded = c.status(new)
        assert seeded["member"] is False and seeded["applied_index"] >= 300   # from the store
        out = c.cli("members", "add", new, "--config", config)
        assert out.returncode == 0, out.stdout + out.stderr
        c.sm.save_state({"after": True})
        alive = ({"instance-1", "instance-2", "instance-3"} - {dead}) | {new}
        wait_for(lambda: len({(c.state(n, "local") or {}).get("state_hash")
                              for n in alive}) == 1,
                 what="the seeded node converging with the members")
        assert (c.state(new, "local") or {})["state"]["after"] is True
