"""``python -m benchmarks engines [--quick] [--engines raft,etcd] [--out DIR]``: the same
workloads through :class:`~hastate.StateManager` on every engine, side by side.

Engines are the contract suite's deployments (``tests/engines/deployments.py``:
``DEPLOYMENTS``, engine name -> three started managers in this process, the store's
members real processes), so an engine that joins the contract suite joins this benchmark
with the same one entry. A deployment that cannot start here (its client package or
server binary missing) is reported as skipped with its reason. Per engine, on one
deployment:

* **sequential write**: ``save_state`` of one 64 B value, one at a time, on the leader:
  p50/p99 latency;
* **pipelined writes**: 16 threads writing 64 B values to their own keys: writes/s;
* **linearizable read**: ``get_state(keys=[...])`` of one key on the leader and on a
  follower: p50/p99;
* **failover**: ``trigger_failover(target)`` from the leader to each other instance in
  turn: seconds until the target leads (the call's own answer) and until a write through
  the target is acknowledged.

Ratios are value / raft's value in the same run (latency: lower is better; writes/s:
higher). Prints a table and writes ``results.json`` and ``summary.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, ContextManager

from benchmarks.common import REPO_ROOT, dump_json, latency_summary, log, machine_info

VALUE_64B = "x" * 64
PIPELINE_THREADS = 16


def deployments() -> dict[str, Callable[[Path], ContextManager[Any]]]:
    """The contract suite's ``DEPLOYMENTS`` (loaded from its file; tests/ is no package)."""
    path = REPO_ROOT / "tests" / "engines" / "deployments.py"
    spec = importlib.util.spec_from_file_location("hastate_bench_deployments", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module   # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return dict(module.DEPLOYMENTS)


def timed(call: Callable[[], Any], count: int) -> dict[str, float]:
    """Latency summary (ms) of ``count`` sequential calls."""
    seconds = []
    for _ in range(count):
        began = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - began)
    return latency_summary(seconds)


def pipelined(sm: Any, duration: float) -> dict[str, float]:
    """Writes/s of PIPELINE_THREADS threads writing for ``duration`` seconds."""
    done = [0] * PIPELINE_THREADS
    stop = time.perf_counter() + duration

    def writer(n: int) -> None:
        while time.perf_counter() < stop:
            sm.save_state({f"bench/pipe/{n}": VALUE_64B})
            done[n] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(PIPELINE_THREADS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return {"writes": sum(done), "seconds": round(elapsed, 2),
            "writes_per_s": round(sum(done) / elapsed, 1)}


def failovers(deployment: Any, trials: int) -> dict[str, Any]:
    """trigger_failover from the leader to another instance, ``trials`` times."""
    leads, writes = [], []
    for _ in range(trials):
        leader = deployment.leader()
        target = next(sm for sm in deployment.followers())
        began = time.perf_counter()
        leads.append(leader.trigger_failover(target.instance_id, timeout=30))
        target.save_state({"bench/failover": time.time()})
        writes.append(time.perf_counter() - began)
    return {"trials": trials, "transfer": latency_summary(leads),
            "write_acknowledged": latency_summary(writes)}


def measure(deployment: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Every workload on one running deployment."""
    leader = deployment.leader()
    follower = deployment.followers()[0]
    leader.save_state({"bench/read": VALUE_64B})
    out: dict[str, Any] = {}
    log("  sequential 64 B writes")
    out["sequential_write"] = timed(lambda: leader.save_state({"bench/seq": VALUE_64B}),
                                    cfg["writes"])
    log("  pipelined writes")
    out["pipelined_write"] = pipelined(leader, cfg["pipeline_s"])
    log("  linearizable reads")
    out["linearizable_read_leader"] = timed(lambda: leader.get_state(keys=["bench/read"]),
                                            cfg["reads"])
    out["linearizable_read_follower"] = timed(
        lambda: follower.get_state(keys=["bench/read"]), cfg["reads"])
    log("  failover")
    out["failover"] = failovers(deployment, cfg["failovers"])
    return out


#: (label, path into an engine's results, higher is better)
ROWS = [("sequential 64 B write p50 (ms)", ("sequential_write", "p50_ms"), False),
        ("sequential 64 B write p99 (ms)", ("sequential_write", "p99_ms"), False),
        ("pipelined writes/s (16 threads)", ("pipelined_write", "writes_per_s"), True),
        ("linearizable read p50, leader (ms)", ("linearizable_read_leader", "p50_ms"), False),
        ("linearizable read p50, follower (ms)", ("linearizable_read_follower", "p50_ms"),
         False),
        ("failover: target leads, p50 (s)", ("failover", "transfer", "p50_ms"), False),
        ("failover: write acknowledged, p50 (s)",
         ("failover", "write_acknowledged", "p50_ms"), False)]


def _value(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for part in path:
        if not isinstance(result, dict) or part not in result:
            return None
        result = result[part]
    if path[0] == "failover":
        return result / 1000.0     # latency_summary gives ms; failover reads in seconds
    return result


def table(results: dict[str, Any]) -> str:
    """One row per workload, one column per engine, ``(x ratio)`` against raft."""
    engines = [e for e, r in results["engines"].items() if "skipped" not in r]
    base = results["engines"].get("raft", {})
    rows = [["workload", *engines]]
    for label, path, _higher in ROWS:
        row = [label]
        for engine in engines:
            value = _value(results["engines"][engine], path)
            ref = _value(base, path)
            cell = "-" if value is None else f"{value:.3f}" if value < 10 else \
                f"{value:.1f}" if value < 1000 else f"{value:.0f}"
            if value is not None and ref and engine != "raft":
                cell += f" (x{value / ref:.2f})"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    skipped = [f"{e}: skipped ({r['skipped']})" for e, r in results["engines"].items()
               if "skipped" in r]
    return "\n".join(lines + skipped)


def run_engine(name: str, build: Callable[[Path], ContextManager[Any]],
               cfg: dict[str, Any]) -> dict[str, Any]:
    """Start the engine's deployment, measure, stop it; a deployment that cannot start here
    (pytest's skip with its reason) is reported as skipped."""
    import pytest
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        try:
            with build(Path(workdir)) as deployment:
                return measure(deployment, cfg)
        except pytest.skip.Exception as exc:
            return {"skipped": str(exc.msg)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 1 minute "
                                                             "per engine)")
    parser.add_argument("--engines", help="comma-separated subset (default: every deployment)")
    parser.add_argument("--out", type=Path, help="results directory "
                                                 "(default results/engines-<time>)")
    args = parser.parse_args(argv)
    available = deployments()
    chosen = args.engines.split(",") if args.engines else sorted(available, key=lambda e: (
        e != "raft", e))
    unknown = [e for e in chosen if e not in available]
    if unknown:
        parser.error(f"no deployment for {unknown}; tests/engines/deployments.py has "
                     f"{sorted(available)}")
    cfg = {"writes": 300, "reads": 300, "pipeline_s": 3.0, "failovers": 3} if args.quick \
        else {"writes": 1000, "reads": 1000, "pipeline_s": 10.0, "failovers": 10}
    out = args.out or REPO_ROOT / "results" / time.strftime("engines-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "python -m benchmarks engines " + " ".join(
            sys.argv[2:] if argv is None else argv),
        "settings": cfg, "machine": machine_info(), "engines": {}}
    for name in chosen:
        log(f"== {name}")
        with contextlib.suppress(KeyboardInterrupt):
            results["engines"][name] = run_engine(name, available[name], cfg)
    text = table(results)
    print(text, flush=True)
    dump_json(out / "results.json", results)
    (out / "summary.md").write_text(f"```\n{results['command']}\n{text}\n```\n")
    log(f"wrote {out / 'results.json'} and {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
