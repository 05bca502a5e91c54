"""Fault-injection campaigns against real hastate nodes in network namespaces.

Two tiers:

* **short** (default suite, ~1 min on 2 cores): two fixed seeds, 3 nodes, 21 s each,
  each with four fault kinds chosen so that together they cover kill -9 of all nodes,
  leader isolation, SIGSTOP of the leader, a leader in the minority, kill of the leader,
  a one-way drop, and the replacement and isolation of a follower; plus negative control 1
  (stale local reads must be flagged).
* **campaign** (``@pytest.mark.chaos``, ``tox -e chaos -- --runs N --duration S``): N runs
  with seeds ``--chaos-seed``, +1, ... (random and printed by default), cluster sizes
  cycled from ``--chaos-nodes`` (3,5), every fault kind; then both negative controls.

Every run needs root, ``ip`` and ``nft`` (the tests skip otherwise) and cleans up its
namespaces, processes and temp dir even when it fails; its JSON result goes to
``results/chaos/`` with the histories, lease traces and logs of any failing run.
Replay a run with ``tox -e chaos -- --runs 1 --chaos-seed <seed> --chaos-nodes <n>
--duration <s>`` (or ``python -m tests.chaos.campaign --seed <seed> ...``).
"""

from __future__ import annotations

import json
import random
import time

import pytest

from .campaign import (RESULTS_DIR, SESSION, RunConfig, RunResult, aggregate, chaos_option,
                       code_under_test, format_table, run_campaign, run_local_read_control,
                       run_raw_kill_all_control)


def describe(result: RunResult) -> str:
    """Assertion message: what broke, and where the evidence is."""
    lines = [f"run {result.run_id} (seed {result.seed}, {result.nodes} nodes): "
             f"error={result.error}"]
    for kind, found in result.violations.items():
        for violation in found[:10]:
            lines.append(f"  {kind}: {violation}")
    lines.append(f"  artifacts: {result.artifacts}; faults: {result.faults}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- short tier

SHORT_RUNS = [
    pytest.param(11, ("kill-all", "isolate-leader", "pause-leader", "partition-leader-minority"),
                 id="kill-all+isolate-leader+pause+minority"),
    pytest.param(13, ("kill-leader", "one-way", "replace-one", "isolate-one"),
                 id="kill-leader+one-way+replace-one+isolate-one"),
]


@pytest.mark.parametrize("seed, kinds", SHORT_RUNS)
def test_short_campaign_finds_no_violation(_stale_namespaces_removed: None, seed: int,
                                           kinds: tuple[str, ...]) -> None:
    """A 21 s run with four faults: linearizable (transactions included), durable, no lease
    overlap, converged, every node's watch stream gapless and equal; the TTL keys of the
    lease workload expired within their bounds and the event workload lost, duplicated or
    reordered no event (its subscriptions included)."""
    # Four holds of at most 3 s and three gaps of at most 1.5 s fit between warmup and tail.
    config = RunConfig(seed=seed, nodes=3, duration=21.0, tail=3.0, hold=(2.0, 3.0),
                       gap=(0.5, 1.5), kinds=kinds, label="short", tmpfs_mb=None, events=True)
    result = run_campaign(config)
    SESSION["runs"].append(result)
    assert result.ok, describe(result)
    assert sorted(result.faults_by_kind) == sorted(kinds), result.faults
    assert result.ops["ok"] > 200, result.ops
    assert result.linearizable == "valid"
    assert result.watch_ok and result.watch_revisions > 100, describe(result)
    assert result.diagnostics["lease_workload"]["deletes_checked"] > 0, describe(result)
    assert result.events_ok is True and result.event_counts["events"] > 50, describe(result)
    assert set(result.event_counts["subscribed"].values()) == {result.event_counts["events"]}


def test_stale_local_reads_on_isolated_node_are_flagged(_stale_namespaces_removed: None) -> None:
    """Negative control 1: a checker that passes everything would pass this too."""
    result = run_local_read_control(seed=21)
    SESSION["controls"].append(f"local-read control (short): {result.linearizable}, "
                               f"{len(result.violations.get('linearizability', []))} keys flagged")
    assert result.error is None, describe(result)
    assert result.linearizable == "invalid", describe(result)
    # Only the checker's verdict on reads is expected to change: writes stay durable.
    assert result.durability_ok and result.lease_ok and result.converged, describe(result)


# --------------------------------------------------------------------------- campaign tier


@pytest.mark.chaos
def test_campaign(_stale_namespaces_removed: None, request: pytest.FixtureRequest) -> None:
    """``--runs`` runs of ``--duration`` s with every fault kind; no violation allowed."""
    runs = int(chaos_option(request.config, "runs", 5))
    duration = float(chaos_option(request.config, "duration", 30.0))
    seed = chaos_option(request.config, "chaos_seed", None)
    base = int(seed) if seed is not None else random.SystemRandom().randrange(1 << 30)
    sizes = [int(x) for x in str(chaos_option(request.config, "chaos_nodes", "3,5")).split(",")]
    print(f"\n[chaos] campaign: {runs} runs x {duration}s, first seed {base}, sizes {sizes}")
    results = []
    for i in range(runs):
        result = run_campaign(RunConfig(seed=base + i, nodes=sizes[i % len(sizes)],
                                        duration=duration))
        results.append(result)
        SESSION["runs"].append(result)
    summary = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "first_seed": base,
               "code": code_under_test(),
               "duration": duration, "aggregate": aggregate(results),
               "runs": [r.run_id for r in results]}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"summary-{time.strftime('%Y%m%d-%H%M%S')}-s{base}.json").write_text(
        json.dumps(summary, indent=1))
    print(format_table(results))
    bad = [r for r in results if not r.ok]
    assert not bad, "\n".join(describe(r) for r in bad)


def _control_runs(config: pytest.Config) -> int:
    explicit = chaos_option(config, "control_runs", None)
    if explicit is not None:
        return int(explicit)
    return max(2, int(chaos_option(config, "runs", 5)) // 4)


@pytest.mark.chaos
def test_negative_control_local_reads(_stale_namespaces_removed: None,
                                      request: pytest.FixtureRequest) -> None:
    """Negative control 1, repeated: detection rate of stale local reads (must be 100%)."""
    n = _control_runs(request.config)
    results = [run_local_read_control(seed=1000 + i) for i in range(n)]
    detected = sum(r.linearizable == "invalid" for r in results)
    line = (f"negative control 1 (local reads on an isolated node): flagged {detected}/{n} "
            f"runs; keys flagged per run "
            f"{[len(r.violations.get('linearizability', [])) for r in results]}")
    SESSION["controls"].append(line)
    print("\n" + line)
    assert all(r.error is None for r in results), [r.error for r in results]
    assert detected == n, line


@pytest.mark.chaos
def test_negative_control_raw_pysyncobj_kill_all(request: pytest.FixtureRequest) -> None:
    """Negative control 2: raw PySyncObj loses acknowledged writes under kill -9 of all
    nodes, and check_durability must say so in exactly the cycles that lost writes."""
    cycles = 4 * _control_runs(request.config)
    result = run_raw_kill_all_control(cycles)
    line = (f"negative control 2 (raw PySyncObj, kill -9 all): {result.cycles} cycles, "
            f"{result.cycles_with_loss} lost acknowledged writes ({result.lost} of "
            f"{result.acked} acked), checker flagged {result.cycles_flagged} "
            f"(detection rate {result.detection_rate}), agreement={result.agreement}")
    SESSION["controls"].append(line)
    print("\n" + line)
    assert result.error is None, result.error
    assert result.agreement, line
    assert result.cycles_with_loss > 0, "raw PySyncObj lost nothing: the control proves nothing"
