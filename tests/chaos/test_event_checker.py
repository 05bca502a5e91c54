"""The campaign's event checker passes a correct run and names each violation (negative
controls: an acknowledged event lost, a node whose $all is reordered, subscriptions that
miss, repeat or reorder events)."""

from __future__ import annotations

from typing import Any

from hastate.events import NewEvent
from hastate.events.streams import EventStreams
from hastate.testing.event_checks import AppendAttempt
from hastate.testing.events import MachineBackend

from .event_checker import check_event_run

NODES = ("n0", "n1", "n2")


def run() -> tuple[list[AppendAttempt], list[list[Any]]]:
    """Appends of two writers (own streams and a shared one) on one replica; the $all rows."""
    es = EventStreams(MachineBackend())
    attempts = []
    for step in range(12):
        stream = f"writer-{step % 2}" if step % 4 < 2 else "shared"
        ids = [f"s{step}-{k}" for k in range(1 + step % 3)]
        result = es.append(stream, [NewEvent("Tick", id=i) for i in ids])
        attempts.append(AppendAttempt(stream, ids, "ok", result.positions))
    attempts.append(AppendAttempt("shared", ["never"], "fail"))
    return attempts, [[e.position, e.stream, e.version, e.id] for e in es.read_all()]


def everywhere(rows: list[list[Any]]) -> dict[str, list[list[Any]]]:
    return {n: [list(r) for r in rows] for n in NODES}


def test_a_correct_run_passes() -> None:
    attempts, rows = run()
    verdict = check_event_run(attempts, everywhere(rows), everywhere(rows))
    assert verdict.ok, verdict.violations
    assert (verdict.events, verdict.nodes) == (len(rows), 3)
    assert verdict.acknowledged == len(rows)


def test_a_lost_acknowledged_event_is_named() -> None:
    attempts, rows = run()
    lost = [r for r in rows if r[3] != "s4-1"]
    verdict = check_event_run(attempts, everywhere(lost), everywhere(lost))
    assert any("lost ['s4-1']" in v for v in verdict.violations), verdict.violations


def test_a_node_with_another_order_is_named() -> None:
    attempts, rows = run()
    alls = everywhere(rows)
    alls["n2"][3], alls["n2"][4] = alls["n2"][4], alls["n2"][3]
    verdict = check_event_run(attempts, alls, everywhere(rows))
    assert [v for v in verdict.violations if v.startswith("n2: $all differs")], verdict


def test_subscriptions_that_miss_repeat_or_reorder_are_named() -> None:
    attempts, rows = run()
    subs = everywhere(rows)
    del subs["n0"][5]                                   # missed
    subs["n1"].insert(6, list(rows[6]))                 # delivered twice
    subs["n2"][1], subs["n2"][2] = subs["n2"][2], subs["n2"][1]   # out of order
    violations = check_event_run(attempts, everywhere(rows), subs).violations
    assert any(v.startswith("n0: subscription missed 1") for v in violations), violations
    assert any(v.startswith("n1: subscription delivered 1 events twice") for v in violations)
    assert any(v.startswith("n2: subscription delivered events out of position order")
               for v in violations), violations
