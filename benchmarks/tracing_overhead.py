"""``python -m benchmarks.tracing_overhead``: what tracing costs on sequential ``save_state``.

The setup of the main benchmark's ``write-seq-64B`` (``HastateSystem``: an in-process
leader plus two ``hastate node run`` processes), with the writing process in one of three
configurations:

* ``absent``: the OpenTelemetry API cannot be imported (hastate's no-op fallback);
* ``off``: the API is installed and no SDK is configured, the default: tracing off;
* ``recording``: an SDK ``TracerProvider`` records every span and hands it to an exporter
  that drops it (the cost of making spans, without any export I/O).

A process sets its tracer provider once, so every run is its own process. Runs are
interleaved (each round runs the three configurations, in an order rotated per round) so
that drift and the other load on a shared machine fall on every configuration alike. The
result is the median over rounds of each configuration's p50 and the ratios to ``absent``
(also as the median of the per-round ratios).

    python -m benchmarks.tracing_overhead [--rounds 5] [--duration 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

VARIANTS = ("absent", "off", "recording")


class _NoOpenTelemetry:
    """An import hook that makes ``opentelemetry`` look uninstalled."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"{name} hidden by the tracing benchmark")
        return None


def _configure(variant: str) -> None:
    if variant == "absent":
        sys.meta_path.insert(0, _NoOpenTelemetry())
    elif variant == "recording":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (SimpleSpanProcessor, SpanExporter,
                                                    SpanExportResult)

        class DropExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(DropExporter()))
        trace.set_tracer_provider(provider)


def child(variant: str, duration: float) -> dict[str, Any]:
    """One run: start the cluster, write sequentially for ``duration`` s, return latencies."""
    _configure(variant)
    from benchmarks.common import CLEANUP, install_signal_handlers, latency_summary
    install_signal_handlers()  # a stopped run still stops its node processes
    from benchmarks.sys_hastate import HastateSystem
    from benchmarks.workloads import run_sequential
    from hastate.observability import tracing

    expected = {"absent": (False, False), "off": (True, False), "recording": (True, True)}
    assert (tracing.available(), tracing.enabled()) == expected[variant], variant
    system = HastateSystem()
    try:
        system.start()
        value = b"x" * 64
        run_sequential(lambda i: system.put(f"k{i % 1000}", value), 1.0)   # warm-up
        run = run_sequential(lambda i: system.put(f"k{i % 1000}", value), duration)
    finally:
        system.stop()
        CLEANUP.run()
    return {"variant": variant, "errors": run.errors, **latency_summary(run.latencies)}


def micro(calls: int = 200_000) -> dict[str, float]:
    """Nanoseconds per call that each tracing hook adds to a write while tracing is off.

    Precise where the end-to-end p50 is noisy: the sum over one write's hooks, divided by
    the write's p50, is the overhead in its purest form.
    """
    from hastate.consensus.entry_trace import EntryTraces
    from hastate.observability.operations import traced_attempt, traced_write
    from hastate.state.codec import Command

    assert not __import__("hastate.observability.tracing").observability.tracing.enabled()

    def per_call(fn: Any, *args: Any) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn(*args)
            best = min(best, (time.perf_counter_ns() - start) / calls)
        return best

    def write(_self: Any, _command: Any, _timeout: Any) -> tuple:
        return ("ok", 1)

    class Base:
        def hook(self, command: bytes) -> None:
            pass

    class Override(Base):  # the shape of HastateSyncObj's _applyCommand/_doApplyCommand
        pending: dict[int, Any] = {}

        def hook(self, command: bytes) -> None:
            if not self.pending:
                return Base.hook(self, command)
            return None

    command = Command(op="update", values={"k": b"v"})
    traced = traced_write(write)
    traces = EntryTraces("n1", "bench")
    base = per_call(write, None, command, None)
    costs = {
        "traced_write wrapper": per_call(traced, None, command, None) - base,
        "traced_attempt": per_call(traced_attempt, None, b"raw", write),
        "EntryTraces.refresh (per tick)": per_call(traces.refresh),
        "overridden Raft method (x2 per write)": 2 * (per_call(Override().hook, b"raw") -
                                                       per_call(Base().hook, b"raw")),
    }
    costs["total per write (one tick)"] = sum(costs.values())
    return costs


def _run_child(variant: str, duration: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.tracing_overhead", "--child",
                          variant, "--duration", str(duration)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} run failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of writes per run")
    parser.add_argument("--out", help="write the runs and the summary as JSON here")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.duration)), flush=True)
        return
    hooks = micro()
    runs: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        order = VARIANTS[round_no % 3:] + VARIANTS[:round_no % 3]
        for variant in order:
            result = _run_child(variant, args.duration)
            result["round"] = round_no
            runs.append(result)
            print(f"round {round_no} {variant:9s} p50 {result['p50_ms']:.3f} ms "
                  f"({result['n']} writes, {result['errors']} errors)", file=sys.stderr,
                  flush=True)
    p50 = {v: statistics.median(r["p50_ms"] for r in runs if r["variant"] == v)
           for v in VARIANTS}
    paired = {v: statistics.median(
        next(r for r in runs if r["round"] == n and r["variant"] == v)["p50_ms"] /
        next(r for r in runs if r["round"] == n and r["variant"] == "absent")["p50_ms"]
        for n in range(args.rounds)) for v in VARIANTS}
    summary = {"rounds": args.rounds, "duration_s": args.duration, "p50_ms": p50,
               "ratio_to_absent": {v: p50[v] / p50["absent"] for v in VARIANTS},
               "paired_ratio_to_absent": paired,
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    summary["hooks_ns_tracing_off"] = hooks
    summary["hooks_share_of_p50_off"] = hooks["total per write (one tick)"] / (p50["off"] * 1e6)
    print("configuration  median p50 (ms)  vs absent  paired")
    for v in VARIANTS:
        print(f"{v:13s}  {p50[v]:15.3f}  {summary['ratio_to_absent'][v]:9.3f}  {paired[v]:6.3f}")
    print("tracing-off hooks, ns per write:")
    for name, ns in hooks.items():
        print(f"  {name:40s} {ns:8.0f}")
    print(f"  = {summary['hooks_share_of_p50_off']:.3%} of the 'off' p50")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
