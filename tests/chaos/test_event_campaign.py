"""The event workload in the network-namespace fault campaign (``RunConfig.events``).

Writers on every node append (own streams with exact expected versions, a shared stream
with ``any``, unknown outcomes retried with the same ids) while the nemesis partitions,
kills and moves the leader; every node records a catch-up subscription from position 0,
resumed from its last record after a restart. Checked: no acknowledged event lost, no
duplicate or partial append, per-stream versions gapless, ``$all`` identical on every node,
every subscription equal to ``$all`` (each event once, in order); and the register
workload's checks as in every run.

* default tier: one 13 s run with a leader kill and a leader in the minority, and the
  negative control: node ``n1``'s recorder resumes from the cluster's head instead of its
  last record after a restart, and ``n1`` is killed while the writers go on: the checker
  must name the events its subscription missed, and only those.
* ``-m chaos``: longer runs with every fault kind and the event workload on.
"""

from __future__ import annotations

import pytest

from .campaign import SESSION, RunConfig, chaos_option, run_campaign
from .test_campaign import describe


@pytest.mark.chaos   # the default tier runs the event workload in every short campaign run
def test_event_workload_under_faults_finds_no_violation(_stale_namespaces_removed: None) -> None:
    config = RunConfig(seed=31, nodes=3, duration=13.0, tail=3.0, hold=(2.0, 3.0),
                       gap=(0.5, 1.5), kinds=("kill-leader", "partition-leader-minority"),
                       label="short-events", tmpfs_mb=None, events=True)
    result = run_campaign(config)
    SESSION["runs"].append(result)
    assert result.ok, describe(result)
    assert sorted(result.faults_by_kind) == ["kill-leader", "partition-leader-minority"]
    assert result.events_ok is True, describe(result)
    assert result.event_counts["events"] > 100, result.event_counts
    assert set(result.event_counts["subscribed"].values()) == {result.event_counts["events"]}


def test_subscription_resuming_from_the_head_is_caught(_stale_namespaces_removed: None) -> None:
    """Negative control: a subscriber that resumes from the head loses events; caught."""
    config = RunConfig(seed=32, nodes=3, duration=10.0, tail=3.0, label="control-events",
                       tmpfs_mb=None, events=True, events_bug_nodes=("n1",),
                       fixed_faults=(("kill-one", 2.0, 3.0, "n1"),))
    result = run_campaign(config, keep="never")
    SESSION["controls"].append(f"event control (resume from head): events_ok="
                               f"{result.events_ok}, {result.violations.get('events')}")
    assert result.error is None, describe(result)
    assert result.events_ok is False, describe(result)
    events = result.violations["events"]
    assert events and all(v.startswith("n1: subscription missed") for v in events), events
    assert result.durability_ok and result.converged, describe(result)


@pytest.mark.chaos
def test_event_campaign(_stale_namespaces_removed: None, request: pytest.FixtureRequest) -> None:
    """``--runs`` runs of ``--duration`` s, every fault kind, the event workload on."""
    runs = int(chaos_option(request.config, "runs", 5))
    duration = float(chaos_option(request.config, "duration", 30.0))
    seed = int(chaos_option(request.config, "chaos_seed", None) or 3100)
    sizes = [int(x) for x in str(chaos_option(request.config, "chaos_nodes", "3,5")).split(",")]
    results = [run_campaign(RunConfig(seed=seed + i, nodes=sizes[i % len(sizes)],
                                      duration=duration, events=True, label="events"))
               for i in range(runs)]
    SESSION["runs"].extend(results)
    bad = [r for r in results if not r.ok or not r.events_ok]
    assert not bad, "\n".join(describe(r) for r in bad)
