"""The campaign's parts that need no namespaces: schedules, lease-trace parsing, the
node's value-CAS over revisions, and the client's outcome classification."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from pathlib import Path
from types import ModuleType

import pytest

from hastate.testing import free_port

from . import campaign
from .campaign import (ALL_KINDS, DISK_KINDS, RunConfig, kinds_for, lease_intervals,
                       percentile, plan_schedule)
from .checkers import check_lease_overlap


def test_schedule_is_a_function_of_the_seed_and_fits_the_run() -> None:
    config = RunConfig(seed=42, nodes=3, duration=60.0)
    first, again = plan_schedule(config), plan_schedule(RunConfig(seed=42, nodes=3,
                                                                  duration=60.0))
    assert first == again
    assert first != plan_schedule(RunConfig(seed=43, nodes=3, duration=60.0))
    assert first[0].at == config.warmup
    for prev, fault in zip(first, first[1:]):
        assert fault.at >= prev.at + prev.hold + config.gap[0] - 0.01
    last = first[-1]
    assert last.at + last.hold <= config.duration - config.tail
    # Round-robin over shuffled kinds: no kind repeats before every kind was used once.
    kinds = config.resolved_kinds()
    head = [f.kind for f in first[:len(kinds)]]
    assert len(set(head)) == len(head)


def test_bridge_only_with_five_nodes_and_disk_faults_only_with_tmpfs() -> None:
    assert "bridge" not in kinds_for(3) and "bridge" in kinds_for(5)
    assert not set(DISK_KINDS) & set(kinds_for(5))
    assert set(DISK_KINDS) <= set(kinds_for(3, disk=True))
    assert set(kinds_for(5)) == set(ALL_KINDS)


def test_fixed_faults_replace_the_seeded_schedule() -> None:
    config = RunConfig(seed=1, fixed_faults=(("isolate-one", 1.5, 3.0, "n2"),))
    [fault] = plan_schedule(config)
    assert (fault.kind, fault.at, fault.hold, fault.target) == ("isolate-one", 1.5, 3.0, "n2")


def test_compaction_is_drawn_from_the_seed_unless_given() -> None:
    assert RunConfig(seed=5).resolved_compaction() == RunConfig(seed=5).resolved_compaction()
    assert RunConfig(seed=5, compaction=77).resolved_compaction() == 77
    assert {RunConfig(seed=s).resolved_compaction() for s in range(40)} == {200, 1000, 5000}


def _trace(path: Path, lines: list[tuple[str, int, float, float]]) -> Path:
    path.write_text("".join(json.dumps({"node": n, "term": t, "from": a, "until": b}) + "\n"
                            for n, t, a, b in lines))
    return path


def test_lease_trace_lines_merge_while_contiguous_and_split_at_gaps(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "a.jsonl", [("a", 2, 1.0, 1.4), ("a", 2, 1.1, 1.5),
                                          ("a", 2, 1.6, 2.0),    # lease lapsed at 1.5
                                          ("a", 3, 1.9, 2.3)])   # new term: new interval
    assert lease_intervals({"a": trace}) == {"a": [(1_000_000_000, 1_500_000_000),
                                                   (1_600_000_000, 2_000_000_000),
                                                   (1_900_000_000, 2_300_000_000)]}
    assert lease_intervals({"b": tmp_path / "missing.jsonl"}) == {"b": []}


def test_lease_overlap_found_between_two_nodes_traces(tmp_path: Path) -> None:
    old = _trace(tmp_path / "old.jsonl", [("a", 2, 1.0, 1.45)])
    ok = _trace(tmp_path / "ok.jsonl", [("b", 3, 1.45, 2.0)])
    bad = _trace(tmp_path / "bad.jsonl", [("b", 3, 1.40, 2.0)])
    assert check_lease_overlap(lease_intervals({"a": old, "b": ok})).ok
    overlap = check_lease_overlap(lease_intervals({"a": old, "b": bad}))
    assert not overlap.ok and overlap.overlaps[0].duration_ns == pytest.approx(50_000_000, abs=2)


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0


# --------------------------------------------------------------------------- node value-CAS


def _script(name: str) -> ModuleType:
    """Import tests/chaos/<name>.py (a standalone script) under a name of its own."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_chaos_script_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def single_node(tmp_path: Path):
    """A one-node hastate cluster on loopback (it leads alone)."""
    from hastate import StateManager

    port = free_port()
    sm = StateManager("solo", {"solo": f"127.0.0.1:{port}"}, data_dir=tmp_path / "solo",
                      write_timeout=5.0)
    sm.start(wait_ready=15)
    try:
        yield sm
    finally:
        sm.stop()


def test_value_cas_applies_only_from_the_expected_value(single_node) -> None:
    node_main = _script("node_main")           # the node program's own functions
    cas, read, write = node_main.cas, node_main.read, node_main.write

    sm = single_node
    assert cas(sm, "k", "x", "y")["result"] == "fail"          # absent, expected "x"
    assert cas(sm, "k", None, "a")["result"] == "ok"           # absent -> a
    assert read(sm, "k", "linearizable") == {"result": "ok", "value": "a"}
    assert cas(sm, "k", None, "b")["result"] == "fail"
    assert write(sm, "k", "c") == {"result": "ok"}
    assert cas(sm, "k", "a", "d")["result"] == "fail"
    assert cas(sm, "k", "c", "d")["result"] == "ok"
    assert sm.get_state("local") == {"k": "d"}


def test_concurrent_value_cas_from_one_value_applies_once(single_node) -> None:
    node_main = _script("node_main")
    cas, write = node_main.cas, node_main.write

    sm = single_node
    for round_ in range(5):
        start = f"s{round_}"
        assert write(sm, "k", start) == {"result": "ok"}
        results: list[str] = []
        barrier = threading.Barrier(8)

        def attempt(i: int) -> None:
            barrier.wait()
            results.append(cas(sm, "k", start, f"r{round_}-{i}")["result"])

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == ["fail"] * 7 + ["ok"], results
        winner = sm.get_state("local")["k"]
        assert winner.startswith(f"r{round_}-")


# --------------------------------------------------------------------------- client outcomes


def test_client_says_fail_when_nothing_listens_and_unknown_when_no_reply() -> None:
    Api = _script("client_main").Api

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert Api(free, timeout=1.0).call("/write", {})[0] == "fail"   # refused: never sent

    silent = socket.create_server(("127.0.0.1", 0))                 # accepts, never answers
    with silent:
        outcome, reply = Api(silent.getsockname()[1], timeout=0.3).call("/write", {})
    assert outcome == "unknown", reply


def test_results_dir_is_gitignored() -> None:
    ignored = (campaign.REPO / ".gitignore").read_text().splitlines()
    assert "/results/" in ignored or "results/" in ignored
