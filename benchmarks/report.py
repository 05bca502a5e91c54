"""Result table (every figure with its ratio to the baseline of the same run), targets, plots."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from benchmarks.common import log

ORDER = ["hastate", "hastate-tls", "pysyncobj", "pysyncobj-nobatch", "etcd"]

#: (workload, label) rows of the table, with the metrics shown for each
ROWS = [
    ("write-seq-64B", "seq write 64 B", ["p50_ms", "p99_ms", "ops_per_s", "cpu_us_per_op"]),
    ("write-seq-4KiB", "seq write 4 KiB", ["p50_ms", "p99_ms", "ops_per_s", "cpu_us_per_op"]),
    ("write-16w-64B", "16 writers 64 B", ["ops_per_s", "p50_ms", "p99_ms", "cpu_us_per_op"]),
    ("write-16w-4KiB", "16 writers 4 KiB", ["ops_per_s", "p50_ms", "p99_ms", "cpu_us_per_op"]),
    ("write-pipe-64B", "pipelined 64 B", ["ops_per_s", "cpu_us_per_op"]),
    ("write-pipe-4KiB", "pipelined 4 KiB", ["ops_per_s", "cpu_us_per_op"]),
    ("read-lin", "linearizable read", ["p50_ms", "p99_ms", "ops_per_s"]),
    ("read-local", "local read", ["p50_ms", "p99_ms", "ops_per_s"]),
]
UNITS = {"p50_ms": "p50 ms", "p99_ms": "p99 ms", "ops_per_s": "ops/s",
         "cpu_us_per_op": "CPU us/op", "p50_s": "p50 s", "p99_s": "p99 s"}


def metric(result: dict[str, Any] | None, name: str) -> float | None:
    if not result:
        return None
    if name in ("p50_ms", "p99_ms"):
        return result.get("latency", {}).get(name)
    return result.get(name)


def fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.01:
        return f"{v:.3f}"
    return f"{v:.4f}"


def cell(v: float | None, base: float | None) -> str:
    if v is None:
        return "-"
    if base is None or base == 0:
        return fmt(v)
    return f"{fmt(v)} (x{fmt(v / base) if v / base < 100 else f'{v / base:.0f}'})"


def build_table(results: dict[str, Any], baseline: str) -> str:
    systems = [s for s in ORDER if s in results["systems"]]
    head = ["workload", "metric"] + [f"{s} (baseline)" if s == baseline else s for s in systems]
    rows: list[list[str]] = []
    tp = results.get("throughput", {})
    for wl, label, metrics in ROWS:
        if not any(wl in tp.get(s, {}) for s in systems):
            continue
        for j, m in enumerate(metrics):
            base = metric(tp.get(baseline, {}).get(wl), m)
            rows.append([label if j == 0 else "", UNITS[m]] +
                        [cell(metric(tp.get(s, {}).get(wl), m), base) for s in systems])
    fo = results.get("failover", {})
    if fo:
        base_fo = fo.get(baseline if baseline in fo else "pysyncobj", {})
        for suffix, label in (("", "failover kill -9, lan"),
                              ("-multi-region", "failover kill -9, multi-region")):
            entries = {s: fo.get(s + suffix) for s in systems}
            entries = {s: v if v and "p50_s" in v else None for s, v in entries.items()}
            if not any(entries.values()):
                continue
            for j, m in enumerate(["p50_s", "p99_s"]):
                base = base_fo.get(m) if base_fo else None
                rows.append([label if j == 0 else "", UNITS[m]] +
                            [cell((entries[s] or {}).get(m), base) if entries[s] else "-"
                             for s in systems])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return "\n".join(lines)


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the numbers and met / missed / n/a."""
    tp = results.get("throughput", {})
    h = tp.get("hastate", {})
    e = tp.get("etcd", {})
    out: list[dict[str, Any]] = []

    def add(name: str, ok: bool | None, measured: str) -> None:
        out.append({"target": name, "met": ok, "measured": measured})

    seq = h.get("write-seq-64B")
    p50 = metric(seq, "p50_ms")
    p99 = metric(seq, "p99_ms")
    add("sequential save_state p50 <= 2 ms (64 B)", None if p50 is None else p50 <= 2.0,
        f"{fmt(p50)} ms")
    add("sequential save_state p99 <= 10 ms (64 B)", None if p99 is None else p99 <= 10.0,
        f"{fmt(p99)} ms")
    ep50 = metric(e.get("write-seq-64B"), "p50_ms")
    add("sequential p50 no worse than etcd's", None if p50 is None or ep50 is None else p50 <= ep50,
        f"{fmt(p50)} vs {fmt(ep50)} ms" + (f" (x{p50 / ep50:.2f})" if p50 and ep50 else ""))
    for size in ("64B", "4KiB"):
        hv = metric(h.get(f"write-16w-{size}"), "ops_per_s")
        ev = metric(e.get(f"write-16w-{size}"), "ops_per_s")
        add(f"16 writers >= 1.5x etcd ({size.replace('B', ' B').replace('Ki ', ' Ki')})",
            None if hv is None or ev is None else hv >= 1.5 * ev,
            f"{fmt(hv)} vs {fmt(ev)} ops/s" + (f" (x{hv / ev:.2f})" if hv and ev else ""))
    hv = metric(h.get("write-pipe-64B"), "ops_per_s")
    add("pipelined 64 B >= 20k writes/s", None if hv is None else hv >= 20000, f"{fmt(hv)} ops/s")
    hv = metric(h.get("write-pipe-4KiB"), "ops_per_s")
    ev = metric(e.get("write-pipe-4KiB"), "ops_per_s")
    add("pipelined 4 KiB >= etcd", None if hv is None or ev is None else hv >= ev,
        f"{fmt(hv)} vs {fmt(ev)} ops/s" + (f" (x{hv / ev:.2f})" if hv and ev else ""))
    for wl in ("write-seq-64B", "write-16w-64B"):
        hv = metric(h.get(wl), "cpu_us_per_op")
        ev = metric(e.get(wl), "cpu_us_per_op")
        add(f"CPU per write <= etcd's ({wl}, client included)",
            None if hv is None or ev is None else hv <= ev,
            f"{fmt(hv)} vs {fmt(ev)} us/write" + (f" (x{hv / ev:.2f})" if hv and ev else ""))
    for key in ("saturation_threads64", "saturation"):
        sat = results.get(key)
        if not sat or "duration_s" not in sat:
            continue
        what = f"{sat.get('label', 'pipelined 64 B')}, {sat['duration_s']:.0f} s"
        share = sat.get("lease_held_share")
        add(f"{what}: lease held in >= 99% of 10 ms samples", sat.get("lease_held"),
            f"lost in {sat['lease_lost_samples']}/{sat['samples']} samples" +
            (f" (held {100 * share:.2f}%)" if share is not None else ""))
        add(f"{what}: 0 elections", sat["no_spurious_elections"], f"{sat['elections']} elections")
        refused = sat.get("refused", {})
        add(f"{what}: every refused write is an OverloadedError", sat.get("refusals_typed"),
            f"{refused.get('overloaded', 0)} OverloadedError, {refused.get('other', 0)} other "
            "failures")
        settled = sat.get("lag_after_settle")
        add(f"{what}: both followers within 1,000 entries 5 s after the load",
            sat.get("followers_settled"), f"lag {settled} entries")
    return out


def targets_text(targets: list[dict[str, Any]]) -> str:
    w = max(len(t["target"]) for t in targets) if targets else 10
    lines = []
    for t in targets:
        verdict = "n/a" if t["met"] is None else ("MET" if t["met"] else "MISSED")
        lines.append(f"{t['target'].ljust(w)}  {verdict:<6}  {t['measured']}")
    return "\n".join(lines)


def scenario_text(results: dict[str, Any]) -> str:
    lines = []
    fo = results.get("failover", {})
    for name, s in fo.items():
        if not s or "p50_s" not in s:
            if s and s.get("skipped"):
                lines.append(f"failover {name}: skipped ({s['skipped']})")
            continue
        extra = ""
        if s.get("elected_p50_s") is not None:
            extra += f", new leader seen p50 {s['elected_p50_s']:.3f} s"
        if s.get("first_call_p50_s") is not None:
            extra += (f", one blocking call made at the kill returned p50 "
                      f"{s['first_call_p50_s']:.3f} s ({s.get('first_call_failed', 0)} gave up)")
        lines.append(f"failover {name}: {s['ok']}/{s['trials']} trials, first commit p50 "
                     f"{s['p50_s']:.3f} s, p99 {s['p99_s']:.3f} s, max {s['max_s']:.3f} s{extra}")
    for key in ("saturation_threads64", "saturation"):
        sat = results.get(key)
        if not sat or "duration_s" not in sat:
            continue
        caught = "never" if sat["catch_up_s"] is None else f"{sat['catch_up_s']:.2f} s"
        lines.append(f"saturation (hastate, {sat.get('label', 'pipelined 64 B')}, "
                     f"{sat['duration_s']:.0f} s): {sat['ops_per_s']:.0f} ops/s (per second min "
                     f"{sat['per_second_ops']['min']}, max {sat['per_second_ops']['max']}), "
                     f"elections {sat['elections']}, lease lost {sat['lease_lost_samples']}/"
                     f"{sat['samples']} x 10 ms samples, refused {sat.get('refused')}, max "
                     f"follower lag {sat['max_lag_entries']} entries, lag 5 s after the load "
                     f"{sat.get('lag_after_settle')}, all caught up after {caught}, "
                     f"{sat['leader_dumps']} leader dumps (max {fmt(sat['leader_dump_max_s'])} s)")
    ls = results.get("large_state")
    if ls and "memory" in ls:
        mem = ", ".join(f"{n} {m['rss_mb']:.0f} MB" + (
            f" ({m['bytes_per_key']:.0f} B/key" + (
                f", {m['bytes_per_key_after_dump']:.0f} after the dumps"
                if "bytes_per_key_after_dump" in m else "") + ")" if m.get("bytes_per_key") else
            " (driver process incl. in-process member)") for n, m in ls["memory"].items())
        c = ls["compaction"]
        lines.append(f"large state: {ls['keys']:,} keys of 64 B loaded in {ls['load_s']:.1f} s; "
                     f"RSS {mem}")
        lat = c["latency"]
        lines.append(f"  writes while compacting ({c['window_s']:.1f} s, {c['writes']} writes): "
                     f"p50 {fmt(lat.get('p50_ms'))} ms, p99 {fmt(lat.get('p99_ms'))} ms, max "
                     f"{fmt(lat.get('max_ms'))} ms; elections {c['elections']}; leader lost "
                     f"its lease in {c['lease_lost_samples_50ms']} x 50 ms samples; leader dump "
                     f"{[round(d, 2) for d in c['leader_dump_s']]} s (copy on the Raft thread "
                     f"{[round(d, 3) for d in c.get('leader_capture_on_raft_thread_s', [])]} s); "
                     f"members dumped {sum(c['members_dumped'].values())}/3")
        idle = c.get("idle_latency")
        if idle:
            lines.append(f"  idle writes on the same state: p50 {fmt(idle.get('p50_ms'))} ms, "
                         f"p99 {fmt(idle.get('p99_ms'))} ms, max {fmt(idle.get('max_ms'))} ms "
                         f"(p99 during the dumps / idle p99: x"
                         f"{lat.get('p99_ms', 0) / max(1e-9, idle.get('p99_ms', 0)):.1f})")
    elif ls and ls.get("error"):
        lines.append(f"large state: failed: {ls['error']}")
    pr = results.get("profile")
    if pr and "cprofile" in pr:
        tick = pr["cprofile"]["tick_thread_us_per_write"]
        top = ", ".join(f"{k} {v:.0f}" for k, v in list(tick.items())[:6])
        lines.append(f"profile (leader tick thread, us per sequential write, cProfile): {top}")
    return "\n".join(lines)


# -- plots -------------------------------------------------------------------------------------
def plots(results: dict[str, Any], out_dir: Path, img_dir: Path | None) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plots skipped: matplotlib is not installed (pip install matplotlib)")
        return []
    colors = {"hastate": "#1f77b4", "hastate-tls": "#9467bd", "pysyncobj": "#ff7f0e",
              "pysyncobj-nobatch": "#2ca02c", "etcd": "#d62728"}
    tp = results.get("throughput", {})
    systems = [s for s in ORDER if s in tp]
    written = []

    # 1. latency CDFs
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=80)
    for ax, (wl, title) in zip(axes, [("write-seq-64B", "sequential write, 64 B"),
                                      ("write-seq-4KiB", "sequential write, 4 KiB"),
                                      ("write-16w-64B", "16 writers, 64 B")]):
        for s in systems:
            pts = (tp[s].get(wl) or {}).get("cdf") or []
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=s, color=colors.get(s))
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of writes")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    written.append(_save(fig, out_dir / "latency_cdf.png", plt))

    # 2. throughput bars
    wls = [("write-seq-64B", "seq 64B"), ("write-seq-4KiB", "seq 4K"), ("write-16w-64B", "16w 64B"),
           ("write-16w-4KiB", "16w 4K"), ("write-pipe-64B", "pipe 64B"),
           ("write-pipe-4KiB", "pipe 4K")]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=80)
    width = 0.8 / max(1, len(systems))
    for k, s in enumerate(systems):
        vals = [(tp[s].get(w) or {}).get("ops_per_s") or 0 for w, _ in wls]
        xs = [i + k * width for i in range(len(wls))]
        ax.bar(xs, vals, width, label=s, color=colors.get(s))
    ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(wls))])
    ax.set_xticklabels([lbl for _, lbl in wls])
    ax.set_yscale("log")
    ax.set_ylabel("committed writes/s (log)")
    ax.set_title("write throughput, 3 members on loopback", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "throughput.png", plt))

    # 3. failover
    fo = {k: v for k, v in results.get("failover", {}).items() if v and v.get("samples_s")}
    if fo:
        fig, ax = plt.subplots(figsize=(8, 3.8), dpi=80)
        names = list(fo)
        data = [[x for x in fo[n]["samples_s"] if x is not None] for n in names]
        try:
            ax.boxplot(data, vert=False, tick_labels=names, showfliers=False)
        except TypeError:  # matplotlib < 3.9
            ax.boxplot(data, vert=False, labels=names, showfliers=False)
        for i, d in enumerate(data, start=1):
            ax.scatter(d, [i] * len(d), s=10, alpha=0.6,
                       color=colors.get(names[i - 1].split("-multi")[0], "k"))
        ax.set_xlabel("kill -9 of the leader -> first acknowledged write (s)")
        ax.set_title("failover time per trial", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "failover.png", plt))
    if img_dir is not None:
        img_dir.mkdir(parents=True, exist_ok=True)
        for path in written:
            shutil.copy(path, img_dir / Path(path).name)
    return written


def _save(fig: Any, path: Path, plt: Any) -> str:
    fig.savefig(path)
    plt.close(fig)
    size = path.stat().st_size
    if size > 200 * 1024:
        log(f"warning: {path.name} is {size // 1024} KB (> 200 KB)")
    return str(path)
