"""``python -m benchmarks.tracing_overhead``: what tracing costs on sequential ``save_state``.

The setup of the main benchmark's ``write-seq-64B`` (``HastateSystem``: an in-process
leader written to back to back, plus two ``hastate node run`` processes), comparing the
writing process in three configurations:

* ``absent``: hastate without the OpenTelemetry API (its no-op fallback, as when the
  ``otel`` extra is not installed);
* ``off``: the API installed and no SDK configured, the default: tracing off;
* ``recording``: an SDK ``TracerProvider`` records every span and hands it to an exporter
  that drops it (the cost of making spans, without export I/O).

On a machine shared with other work, back-to-back runs of a few seconds differ by far
more than 2 %. So the comparison is interleaved finely, inside one cluster: blocks of
writes alternate between ``absent`` and the configuration under test (``off`` in one
process, ``recording`` in another, since a process installs its tracer provider once),
switching hastate's tracing module between its two paths; every pair of blocks sees the
same load. Reported: the p50 of each configuration over all its blocks, their ratio, the
median of the per-pair ratios, and the per-write cost of the tracing-off hooks measured
in isolation (nanoseconds, the precise answer that the end-to-end ratio bounds).

    python -m benchmarks.tracing_overhead [--blocks 100] [--block-writes 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

SWITCH_WRITES = 5   # writes after each switch that are not measured (nodes see it next tick)
_SPANS = [0]        # spans the recording configuration made (a check that it recorded)


def _switcher(variant: str) -> Any:
    """Install what ``variant`` needs; return ``use(name)`` switching between it and absent."""
    from hastate.observability import tracing

    api = tracing._trace
    tracer = None
    if variant == "recording":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (SimpleSpanProcessor, SpanExporter,
                                                    SpanExportResult)

        class DropExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                _SPANS[0] += len(spans)
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(DropExporter()))
        trace.set_tracer_provider(provider)
        assert tracing.enabled()
        tracer = tracing._tracer

    def use(name: str) -> None:
        # absent: the module behaves exactly as when `import opentelemetry` failed.
        tracing._trace = None if name == "absent" else api
        tracing._enabled = name == "recording"
        tracing._tracer = tracer if name == "recording" else None
        tracing._recheck_at = float("inf")   # nothing else is installed during the run
    return use


def alternate(variant: str, blocks: int, block_writes: int) -> dict[str, Any]:
    """One cluster; ``blocks`` blocks of writes, alternating between absent and ``variant``."""
    from benchmarks.common import CLEANUP, install_signal_handlers, percentile
    from benchmarks.sys_hastate import HastateSystem

    install_signal_handlers()  # a stopped run still stops its node processes
    use = _switcher(variant)
    latencies: dict[str, list[float]] = {"absent": [], variant: []}
    pair_ratios: list[float] = []
    value = b"x" * 64
    system = HastateSystem()
    perf = time.perf_counter
    try:
        system.start()
        i = 0
        for _ in range(200):                                # warm-up
            system.put(f"k{i % 1000}", value)
            i += 1
        for block in range(blocks):
            order = ("absent", variant) if block % 2 == 0 else (variant, "absent")
            p50s = {}
            for name in order:
                use(name)
                measured = []
                for n in range(SWITCH_WRITES + block_writes):
                    t0 = perf()
                    system.put(f"k{i % 1000}", value)
                    if n >= SWITCH_WRITES:
                        measured.append(perf() - t0)
                    i += 1
                latencies[name].extend(measured)
                p50s[name] = percentile(sorted(measured), 50)
            pair_ratios.append(p50s[variant] / p50s["absent"])
    finally:
        use("off" if variant == "off" else "recording")
        system.stop()
        CLEANUP.run()
    p50 = {name: percentile(sorted(lat), 50) * 1e3 for name, lat in latencies.items()}
    return {"variant": variant, "writes_per_configuration": len(latencies[variant]),
            "p50_ms": p50, "ratio": p50[variant] / p50["absent"],
            "median_pair_ratio": statistics.median(pair_ratios), "spans_recorded": _SPANS[0],
            "pair_ratio_p25_p75": [percentile(sorted(pair_ratios), 25),
                                   percentile(sorted(pair_ratios), 75)]}


def micro(calls: int = 200_000) -> dict[str, float]:
    """Nanoseconds per call that each tracing hook adds to a write while tracing is off."""
    from hastate.consensus.entry_trace import EntryTraces
    from hastate.observability import tracing
    from hastate.observability.operations import traced_attempt, traced_write
    from hastate.state.codec import Command

    assert not tracing.enabled()

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


def _run_child(variant: str, blocks: int, block_writes: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.tracing_overhead", "--child",
                          variant, "--blocks", str(blocks), "--block-writes", str(block_writes)],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} run failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=100, help="blocks per configuration")
    parser.add_argument("--block-writes", type=int, default=40, help="measured writes per block")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--child", choices=("off", "recording"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(alternate(args.child, args.blocks, args.block_writes)), flush=True)
        return
    hooks = micro()
    runs = {v: _run_child(v, args.blocks, args.block_writes) for v in ("off", "recording")}
    share = hooks["total per write (one tick)"] / (runs["off"]["p50_ms"]["off"] * 1e6)
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "blocks": args.blocks, "block_writes": args.block_writes, "runs": runs,
              "hooks_ns_tracing_off": hooks, "hooks_share_of_p50_off": share}
    print("configuration vs absent   p50 (ms)   absent p50   ratio   median pair ratio (p25-p75)")
    for v, run in runs.items():
        lo, hi = run["pair_ratio_p25_p75"]
        print(f"{v:24s} {run['p50_ms'][v]:9.3f}   {run['p50_ms']['absent']:10.3f}   "
              f"{run['ratio']:5.3f}   {run['median_pair_ratio']:5.3f} ({lo:.3f}-{hi:.3f})")
    print("tracing-off hooks, ns per write (measured alone):")
    for name, ns in hooks.items():
        print(f"  {name:40s} {ns:8.0f}")
    print(f"  = {share:.3%} of the 'off' p50")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
