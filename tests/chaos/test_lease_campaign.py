"""The lease/TTL workload in the network-namespace campaign: bots in every node keep TTL keys
alive through partitions; no key expires before its TTL, none outlives it by more than the
bound; a half-TTL expirer under partitions is caught (negative control).

The first tests check the checkers on hand-made records (no namespaces needed).
"""

from __future__ import annotations

from typing import Any

import pytest

from .campaign import SESSION, RunConfig, run_campaign
from .lease_checker import LeaseLife, check_expiry_bound, check_no_early_expiry, expiry_bound
from .lease_workload import LATE_SLACK, LeaseSettings, histories, run_lease_bug_control
from .test_campaign import describe

TTL = 2.0


def grant(lease: int, sent: float) -> dict[str, Any]:
    return {"t": "grant", "lease": lease, "ttl": TTL, "sent": sent, "end": sent + 0.01}


def seen(kind: str, lease: int, at: float, node: str = "n0") -> dict[str, Any]:
    return {"t": kind, "key": f"lw/{lease}/n0b0-1-0", "node": node, "rev": 1, "seen": at}


def test_records_become_early_and_late_histories() -> None:
    records = [grant(7, 10.0), seen("put", 7, 10.1),
               {"t": "attempt", "lease": 7, "sent": 10.6},
               {"t": "ka", "lease": 7, "sent": 10.6, "end": 10.7, "outcome": "ok"},
               {"t": "attempt", "lease": 7, "sent": 11.3},         # the process died here
               seen("delete", 7, 12.0, "n1"), seen("delete", 7, 12.2, "n2"),
               grant(9, 10.0), {"t": "revoke", "lease": 9, "sent": 10.5}]
    early, late = histories(records, write_timeout=3.0)
    assert early[7].refreshes == [10.0, 10.6] and early[9].revoked_at == 10.5
    assert early[7].deletes == [("n1", "lw/7/n0b0-1-0", 12.0), ("n2", "lw/7/n0b0-1-0", 12.2)]
    assert late[7].refreshed_by == 11.3 + 3.0                # an unanswered keep-alive
    assert late[7].deleted == {"lw/7/n0b0-1-0": 12.0} and late[9].revoked


def test_deletes_after_the_first_read_are_not_judged_early() -> None:
    """The files are read while the bots run: a delete seen after the first read may come
    from a revoke whose record missed its own file's read, so only earlier ones are judged;
    an early delete before the first read is still caught."""
    records = [grant(7, 10.0), {"t": "ka", "lease": 7, "sent": 10.6, "end": 10.7,
                                "outcome": "ok"},
               seen("delete", 7, 11.0, "n1"), seen("delete", 7, 12.5, "n2")]
    early, _ = histories(records, write_timeout=3.0, judged_until=12.0)
    assert early[7].deletes == [("n1", "lw/7/n0b0-1-0", 11.0)]
    assert [v.node for v in check_no_early_expiry(early).violations] == ["n1"]
    late_read, _ = histories(records[:2] + records[3:], write_timeout=3.0, judged_until=12.0)
    assert check_no_early_expiry(late_read).ok


def test_a_key_outliving_its_bound_is_late_unless_no_leader_owed_it() -> None:
    life = LeaseLife(TTL, refreshed_by=10.0, deleted={"k": 14.0})
    assert expiry_bound(life, [(0.0, 30.0)], LATE_SLACK) == 10.0 + TTL + LATE_SLACK
    assert check_expiry_bound({1: life}, [(0.0, 30.0)], set(), LATE_SLACK) == []
    life.deleted["k"] = 15.0
    assert [v.key for v in check_expiry_bound({1: life}, [(0.0, 30.0)], set(), LATE_SLACK)] \
        == ["k"]
    # leaders that did not lead long enough owe nothing; a new one restarts the countdown
    assert expiry_bound(life, [(0.0, 13.0), (13.5, 16.0)], LATE_SLACK) is None
    assert expiry_bound(life, [(0.0, 13.0), (13.5, 30.0)], LATE_SLACK) == 13.5 + TTL + LATE_SLACK
    gone = LeaseLife(TTL, 10.0, deleted={"k": None})          # never seen deleted:
    assert check_expiry_bound({1: gone}, [(0.0, 30.0)], set(), LATE_SLACK) == []
    assert len(check_expiry_bound({1: gone}, [(0.0, 30.0)], {"k"}, LATE_SLACK)) == 1
    revoked = LeaseLife(TTL, 10.0, revoked=True, deleted={"k": None})
    assert check_expiry_bound({1: revoked}, [(0.0, 30.0)], {"k"}, LATE_SLACK) == []


@pytest.mark.chaos   # the default tier checks the lease workload in every short campaign run
def test_partitions_expire_no_key_early_and_none_late(_stale_namespaces_removed: None) -> None:
    """Bots on every node, the leader isolated then left in a minority: every delete seen
    on any node is within [TTL, bound] of what its bot was promised."""
    config = RunConfig(seed=31, nodes=3, duration=13.0, tail=3.0, hold=(2.5, 3.5),
                       gap=(0.5, 1.0), kinds=("isolate-leader", "partition-leader-minority"),
                       label="lease-partitions", tmpfs_mb=None)
    result = run_campaign(config)
    SESSION["runs"].append(result)
    assert result.ok, describe(result)
    work = result.diagnostics["lease_workload"]
    assert work["deletes_checked"] > 10 and work["expiries_owed"] > 3, work
    assert work["kept_across_faults"] > 0, work          # leases lived through a partition


def test_a_half_ttl_expirer_under_partitions_is_caught(_stale_namespaces_removed: None) -> None:
    """Negative control: bots keep every lease alive, so only the partition (n2's bots
    cannot reach the majority) lets the wrong expirer end leases early."""
    result = run_lease_bug_control(seed=32)
    SESSION["controls"].append(f"lease-ttl early control: {len(result.violations['lease_early'])} "
                               "early expiries flagged")
    assert result.error is None, describe(result)
    early = result.violations["lease_early"]
    assert any("/n2b" in v for v in early), describe(result)
    # only the TTL checks are expected to fire
    assert result.linearizable == "valid" and result.durability_ok and result.converged, \
        describe(result)


@pytest.mark.chaos
def test_a_late_expirer_is_caught(_stale_namespaces_removed: None) -> None:
    """Negative control of the bound: abandoned leases expire two TTLs late."""
    result = run_lease_bug_control(seed=33, bug="triple-ttl")
    SESSION["controls"].append(f"lease-ttl late control: {len(result.violations['lease_late'])} "
                               "late expiries flagged")
    assert result.error is None, describe(result)
    assert result.violations["lease_late"] and not result.violations["lease_early"], \
        describe(result)


@pytest.mark.parametrize("settings", [None, LeaseSettings(ttl=1.0, abandon=False)])
def test_settings_turn_into_node_arguments(settings: LeaseSettings | None, tmp_path) -> None:
    from .lease_workload import node_args, node_env
    args = node_args(settings, tmp_path, "n1")
    assert (args == []) == (settings is None)
    if settings is not None:
        assert args[:4] == ["--lease-out", str(tmp_path / "lease-bot-n1.jsonl"),
                            "--lease-ttl", "1.0"] and args[4:] == ["--lease-keep"]
    assert node_env(settings) == {}
