"""/metrics of real nodes: every family documented, values that move, dashboards and alerts
that reference only metrics the nodes export."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from hastate.errors import ConflictError
from hastate.testing import wait_for
from hastate.testing.embedded import EmbeddedCluster
from hastate.testing.metrics import sample

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

METRIC_REF = re.compile(r"\bhastate_[a-z0-9_]+")


def exported_names(families: dict) -> set[str]:
    """Family names as written in queries: counters with _total, plus every sample name."""
    names = set()
    for family in families.values():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
        names.update(s.name for s in family.samples)
    return {n for n in names if n.startswith("hastate_") and not n.endswith("_created")}


def test_every_exported_metric_is_documented_and_every_documented_one_exported(
        ops: EmbeddedCluster) -> None:
    exported = set()
    for node_id in ops.ids:
        exported |= {n for n in exported_names(ops.scrape(node_id))
                     if not n.endswith(("_bucket", "_count", "_sum"))}
    doc = (REPO / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(hastate_[a-z0-9_]+)`", doc, re.M))
    assert exported - documented == set(), "exported but not in docs/metrics.md"
    assert documented - exported == set(), "documented but not exported"
    for family in ops.scrape("instance-2").values():
        if family.name.startswith("hastate_"):
            assert family.documentation, family.name


def test_commit_index_and_proposals_move_with_writes(ops: EmbeddedCluster) -> None:
    before = {n: ops.scrape(n) for n in ops.ids}
    start = {n: sample(f, "hastate_commit_index", node=n) for n, f in before.items()}
    ok_before = sample(before["instance-1"], "hastate_proposals_total", op="update",
                       result="ok")
    for i in range(25):
        ops.sm.save_state({f"m{i}": i})
    rev = ops.sm.revisions()["m0"]
    with pytest.raises(ConflictError):
        ops.sm.compare_and_set("m0", 99, rev + 1000)
    for node_id in ops.ids:
        wait_for(lambda n=node_id: sample(ops.scrape(n), "hastate_commit_index", node=n)
                 >= start[n] + 25, what=f"{node_id} commit index +25")
    after = ops.scrape("instance-1")
    assert sample(after, "hastate_proposals_total", op="update", result="ok") == ok_before + 25
    assert sample(after, "hastate_proposals_total", op="txn", result="conflict") >= 1
    assert sample(after, "hastate_proposal_seconds_count", node="instance-1", op="update") >= 25
    assert sample(after, "hastate_applied_index", node="instance-1") >= start["instance-1"] + 25
    assert sample(after, "hastate_keys", node="instance-1") >= 25
    assert sample(after, "hastate_journal_bytes", node="instance-1") > 0


def test_failover_counts_leader_changes_elections_and_manual_failovers(ops: EmbeddedCluster) -> None:
    leader = ops.wait_leader()
    target = next(n for n in ("instance-3", "instance-2") if n != leader)
    before = {n: ops.scrape(n) for n in ops.ids}
    code, body = ops.post(leader, "/admin/transfer-leadership", {"to": target})
    assert code == 200, body
    assert ops.wait_leader() == target
    # a follower that did not vote learns of the new leader with its first append_entries
    for node_id in ops.ids:
        wait_for(lambda n=node_id: sample(ops.scrape(n), "hastate_leader_changes_total") >
                 sample(before[n], "hastate_leader_changes_total"), timeout=5,
                 what=f"{node_id} counts the leader change")
    after = {n: ops.scrape(n) for n in ops.ids}

    def delta(node: str, name: str, **labels: str) -> float:
        return sample(after[node], name, **labels) - sample(before[node], name, **labels)

    for node_id in ops.ids:
        assert delta(node_id, "hastate_term") >= 1, node_id
    assert delta(target, "hastate_elections_started_total") >= 1
    assert delta(leader, "hastate_failovers_total", reason="manual") == 1
    assert sample(after[target], "hastate_role", role="leader") == 1
    assert sample(after[target], "hastate_is_leader") == 1
    assert sample(after[target], "hastate_lease_remaining_seconds") > 0
    assert sample(after[leader], "hastate_role", role="follower") == 1


def test_paused_follower_shows_lag_and_last_contact_on_the_leader(ops: EmbeddedCluster) -> None:
    ops.sm.trigger_failover("instance-1", timeout=15)
    ops.procs["instance-3"].send_signal(signal.SIGSTOP)
    try:
        for i in range(20):
            ops.sm.save_state({f"p{i}": i})
        wait_for(lambda: (sample(ops.scrape("instance-1"), "hastate_peer_last_contact_seconds",
                                 peer="instance-3") or 0) > 1.0, what="last contact > 1 s")
        fams = ops.scrape("instance-1")
        assert sample(fams, "hastate_peer_lag_entries", peer="instance-3") >= 20
        assert sample(fams, "hastate_peer_lag_entries", peer="instance-2") <= 2
        assert sample(fams, "hastate_peer_last_contact_seconds", peer="instance-2") < 1.0
        assert sample(fams, "hastate_peer_match_index", peer="instance-2") > \
            sample(fams, "hastate_peer_match_index", peer="instance-3")
    finally:
        ops.procs["instance-3"].send_signal(signal.SIGCONT)
    wait_for(lambda: sample(ops.scrape("instance-1"), "hastate_peer_lag_entries",
                            peer="instance-3") == 0, what="instance-3 caught up")


def test_killed_follower_shows_disconnected(plain_cluster: EmbeddedCluster) -> None:
    leader = plain_cluster.wait_leader()
    victim = next(n for n in plain_cluster.ids if n != leader)
    assert sample(plain_cluster.scrape(leader), "hastate_peer_connected", peer=victim) == 1
    plain_cluster.kill(victim, signal.SIGKILL)
    wait_for(lambda: sample(plain_cluster.scrape(leader), "hastate_peer_connected",
                            peer=victim) == 0, what="peer_connected 0")
    other = next(n for n in plain_cluster.ids if n not in (leader, victim))
    assert sample(plain_cluster.scrape(other), "hastate_peer_connected", peer=victim) == 0
    assert sample(plain_cluster.scrape(leader), "hastate_is_leader") == 1


def _referenced(path) -> set[str]:
    return set(METRIC_REF.findall(path.read_text()))


def test_dashboard_and_alert_rules_reference_only_exported_metrics(ops: EmbeddedCluster) -> None:
    ops.sm.save_state({"dashboard": 1})
    leader = ops.wait_leader()
    # shipping lag is exported by the lease holder once its shipper has looked at the store
    wait_for(lambda: sample(ops.scrape(leader), "hastate_shipping_lag_entries") is not None,
             what="shipping lag on the leader")
    exported = set()
    for node_id in ops.ids:
        exported |= exported_names(ops.scrape(node_id))

    dashboard = REPO / "docs" / "grafana" / "hastate.json"
    doc = json.loads(dashboard.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10 and all(METRIC_REF.search(e) for e in exprs)
    titles = " ".join(p["title"].lower() for p in doc["panels"])
    for needed in ("leader by region", "lag", "commit rate", "p99", "snapshot age"):
        assert needed in titles, needed

    alerts = REPO / "cluster" / "alerts.yml"
    for path in (dashboard, alerts):
        refs = _referenced(path)
        assert refs, path
        missing = sorted(refs - exported)
        assert missing == [], f"{path.name} references metrics no node exports: {missing}"


def test_alert_rules_are_well_formed() -> None:
    yaml = pytest.importorskip("yaml")   # PyYAML is not a declared test dependency (yet)
    doc = yaml.safe_load((REPO / "cluster" / "alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"]
        assert METRIC_REF.search(rule["expr"]) or "up{" in rule["expr"], rule["alert"]
    assert {"HastateNoLeader", "HastateFollowerLagging", "HastateSnapshotTooOld",
            "HastateJournalFsyncSlow"} <= {r["alert"] for r in rules}
