"""hastate-only scenarios: saturation, large state under compaction, hot-path profile."""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CLEANUP, latency_summary, log, percentile, proc_cpu, proc_mem, wait_for
from benchmarks.workloads import VALUES, Workload, execute, run_sequential

#: A follower more than this many seconds of throughput behind counts as lagging.
LAG_LIMIT_S = 1.0
#: ... and so does one that needs longer than this to catch up once the load stops.
CATCH_UP_LIMIT_S = 1.0


# -- saturation -----------------------------------------------------------------------------
#: Lease samples: one every 10 ms (a trading loop checks is_leader() about that often).
LEASE_SAMPLE_S = 0.01
#: Follower lag is judged this long after the load ends ...
SETTLE_S = 5.0
#: ... and must then be at most this many entries on every follower.
SETTLED_LAG_ENTRIES = 1000
#: The lease must be held in at least this share of the samples.
LEASE_HELD_MIN = 0.99

DRIVERS = {
    "pipe": Workload("write-pipe-64B", "pipe", 64, label="pipelined (save_state_async), 64 B"),
    "threads64": Workload("write-64t-64B", "conc", 64, threads=64,
                          label="64 threads of save_state, 64 B"),
}


def saturation(system: Any, duration: float,
               driver: str = "pipe") -> tuple[dict[str, Any], dict[str, Any]]:
    """Saturating 64 B writes for ``duration`` s while sampling lease, terms and follower lag.

    ``driver``: "pipe" (save_state_async, as many in flight as the client's window) or
    "threads64" (64 threads of blocking save_state). The lease and the term are sampled
    every 10 ms, follower lag every 250 ms; after the load, the lag once more 5 s later.
    Returns (the workload result, the saturation report).
    """
    sm = system.sm
    so = sm.node.syncobj
    samples: list[dict[str, Any]] = []
    lease: list[bool] = []
    stop = threading.Event()
    ser0 = len(system.serialize_durations)
    cap0 = len(system.capture_durations)
    refused0 = dict(system.refused)
    t0 = time.monotonic()

    def monitor() -> None:
        while not stop.wait(0.25):
            samples.append({"t": round(time.monotonic() - t0, 2), "lag": system.lag(),
                            "term": so.raftCurrentTerm, "leader": sm.is_leader(),
                            "log": so.log_length()})

    def lease_monitor() -> None:
        while not stop.wait(LEASE_SAMPLE_S):
            lease.append(sm.is_leader())

    threads = [threading.Thread(target=fn, daemon=True) for fn in (monitor, lease_monitor)]
    for thread in threads:
        thread.start()
    spy_box: list[Any] = []
    spy_thread = None
    if shutil.which("py-spy") and duration >= 8 and driver == "pipe":
        spy_thread = threading.Thread(target=lambda: spy_box.append(pyspy_sample(
            system.server_pids()[0], min(5.0, duration / 3), delay=min(3.0, duration / 4))),
            daemon=True)
        spy_thread.start()
    result = execute(system, DRIVERS[driver], duration, keep_run=True)
    stop.set()
    for thread in threads:
        thread.join(2)
    if spy_thread is not None:
        spy_thread.join(20)
    run = result.pop("_run")
    # catch-up: every follower's match index reaches the leader's last index; and the lag
    # SETTLE_S after the load ended
    t_end = time.monotonic()
    caught = None
    settled: dict[str, int] | None = None
    while time.monotonic() - t_end < 60 and (caught is None or settled is None):
        lag = system.lag()
        if caught is None and lag and all(v <= 0 for v in lag.values()):
            caught = time.monotonic() - t_end
        if settled is None and time.monotonic() - t_end >= SETTLE_S:
            settled = lag
        time.sleep(0.01)
    per_second = _per_second(run.completions, run.start, duration) if run.completions else []
    ops_s = result["ops_per_s"] or 1.0
    max_lag = {}
    for s in samples:
        for peer, lag in s["lag"].items():
            max_lag[peer] = max(max_lag.get(peer, 0), lag)
    worst = max(max_lag.values()) if max_lag else 0
    lease_lost = sum(1 for held in lease if not held)
    refused = {k: system.refused[k] - refused0.get(k, 0) for k in system.refused}
    dumps = system.serialize_durations[ser0:]
    captures = system.capture_durations[cap0:]
    report = {
        "driver": driver, "label": DRIVERS[driver].label,
        "duration_s": duration, "ops_per_s": result["ops_per_s"], "elections": result["elections"],
        "lease_lost_samples": lease_lost, "samples": len(lease),
        "lease_held_share": (1 - lease_lost / len(lease)) if lease else None,
        "refused": refused, "max_lag_entries": max_lag, "max_lag_s": worst / ops_s,
        "catch_up_s": caught, "lag_after_settle": settled, "settle_s": SETTLE_S,
        "per_second_ops": {
            "min": min(per_second) if per_second else 0, "max": max(per_second) if per_second else 0,
            "p50": percentile(sorted(per_second), 50) if per_second else 0},
        "leader_dumps": len(dumps), "leader_dump_max_s": max(dumps) if dumps else None,
        "leader_capture_max_s": max(captures) if captures else None,
        "lag_series": [[s["t"], max(s["lag"].values()) if s["lag"] else None] for s in samples],
        "follower_pyspy_top": spy_box[0] if spy_box else None,
    }
    report["lease_held"] = bool(lease) and report["lease_held_share"] >= LEASE_HELD_MIN
    report["no_spurious_elections"] = result["elections"] == 0
    report["refusals_typed"] = refused["other"] == 0
    report["followers_settled"] = settled is not None and bool(settled) and \
        all(v <= SETTLED_LAG_ENTRIES for v in settled.values())
    report["no_lagging_follower"] = (report["max_lag_s"] <= LAG_LIMIT_S and caught is not None
                                     and caught <= CATCH_UP_LIMIT_S)
    log(f"  saturation ({driver}): {result['ops_per_s']:.0f} ops/s for {duration:.0f}s, "
        f"elections {result['elections']}, lease lost in {lease_lost}/{len(lease)} samples, "
        f"refused {refused}, max lag {worst} entries ({report['max_lag_s']:.2f}s), lag "
        f"{SETTLE_S:.0f}s after {settled}, caught up after "
        f"{'never' if caught is None else f'{caught:.2f}s'}")
    return result, report


def _per_second(completions: list[float], start: float, duration: float) -> list[int]:
    buckets = [0] * max(1, int(duration))
    for c in completions:
        i = int(c - start)
        if 0 <= i < len(buckets):
            buckets[i] += 1
    return buckets


# -- large state and compaction -----------------------------------------------------------------
def large_state(system: Any, keys: int, window_max: float) -> dict[str, Any]:
    """Load ``keys`` keys (64 B values), report RSS per member, then write while it compacts."""
    sm = system.sm
    cluster = system.cluster
    so = sm.node.syncobj
    pids = {cluster.ids[0]: os.getpid(), **{i: cluster.procs[i].pid for i in system.peer_ids}}
    gc.collect()
    mem0 = {n: proc_mem(p) for n, p in pids.items()}
    batch = 500
    value = VALUES[64]
    # distinct, incompressible values (slices of 1 MiB of random bytes, 32 KiB+ apart repeat)
    blob = os.urandom(2**20 + 64)
    log(f"large state: loading {keys} keys ({batch} per save_state)")
    t0 = time.monotonic()
    for start in range(0, keys, batch):
        sm.save_state({f"big{i:07d}": blob[(i * 64) % 2**20:(i * 64) % 2**20 + 64]
                       for i in range(start, min(start + batch, keys))}, timeout=60)
    load_s = time.monotonic() - t0
    commit = so.raftCommitIndex
    for node_id in system.peer_ids:
        wait_for(lambda n=node_id: (cluster.status(n) or {}).get("applied_index", 0) >= commit,
                 120, f"{node_id} applied the load")
    gc.collect()
    mem1 = {n: proc_mem(p) for n, p in pids.items()}
    # bytes/key only for the member processes: the in-process member shares its process
    # (and its RSS) with the driver, whose own allocations come and go
    memory = {n: {"rss_before_mb": mem0[n]["rss"] / 2**20, "rss_mb": mem1[n]["rss"] / 2**20,
                  "peak_rss_mb": mem1[n]["hwm"] / 2**20,
                  "bytes_per_key": (mem1[n]["rss"] - mem0[n]["rss"]) / keys
                  if n != cluster.ids[0] else None,
                  "note": "driver process (in-process member + benchmark)"
                  if n == cluster.ids[0] else "member process"}
              for n in pids}
    log(f"  loaded in {load_s:.1f}s; RSS MB: " + ", ".join(
        f"{n} {m['rss_mb']:.0f}" + (f" ({m['bytes_per_key']:.0f} B/key)" if m["bytes_per_key"]
                                    else " (driver)") for n, m in memory.items()))

    # Idle reference on the same cluster and state: sequential writes while no dump runs
    # (the load left fewer entries in the log than the compaction threshold).
    idle = run_sequential(lambda i: sm.save_state({f"k{i % 1024}": value}), 1.5)
    idle_latency = latency_summary(idle.latencies)
    log(f"  idle writes on the large state: p50 {idle_latency.get('p50_ms', 0):.2f} ms, p99 "
        f"{idle_latency.get('p99_ms', 0):.1f} ms, max {idle_latency.get('max_ms', 0):.0f} ms")

    # Bring the log close to the compaction threshold with fast async writes, then time
    # sequential writes until every member has dumped the large state (or the window ends).
    threshold = sm.spec.log_compaction_entries
    need = max(0, threshold - so.log_length() - 300)
    if need:
        sem = threading.Semaphore(0)
        for i in range(need):
            system.submit(f"k{i % 1024}", value, lambda _ok: sem.release())
        for _ in range(need):
            if not sem.acquire(timeout=30):
                break
    dump_paths = {n: cluster.workdir / "data" / n / "state.dump" for n in cluster.ids}
    mtimes0 = {n: _mtime(p) for n, p in dump_paths.items()}
    ser0 = len(system.serialize_durations)
    cap0 = len(system.capture_durations)
    terms0 = system.terms()
    lease_lost = [0]
    stop = threading.Event()

    def monitor() -> None:
        while not stop.wait(0.05):
            if not sm.is_leader():
                lease_lost[0] += 1

    threading.Thread(target=monitor, daemon=True).start()
    lat: list[float] = []
    perf = time.perf_counter
    t_start = perf()
    all_dumped_at = None
    i = 0
    while perf() - t_start < window_max:
        t = perf()
        try:
            sm.save_state({f"k{i % 1024}": value}, timeout=30)
            lat.append(perf() - t)
        except Exception as exc:
            log(f"  write failed during compaction: {exc!r}")
        i += 1
        if i % 50 == 0 and all_dumped_at is None and \
                all(_mtime(p) != mtimes0[n] for n, p in dump_paths.items()):
            all_dumped_at = perf()
        if all_dumped_at is not None and perf() - all_dumped_at > 1.0:
            break
    window = perf() - t_start
    stop.set()
    terms1 = system.terms()
    elections = max([terms1[k] - terms0[k] for k in terms1 if k in terms0] or [0])
    dumps = system.serialize_durations[ser0:]
    captures = system.capture_durations[cap0:]
    dumped = {n: _mtime(p) != mtimes0[n] for n, p in dump_paths.items()}
    sizes = {n: (p.stat().st_size if p.exists() else 0) for n, p in dump_paths.items()}
    # Again once the log that carried the load is compacted away (the dumps above).
    for node_id in system.peer_ids:
        m = proc_mem(pids[node_id])
        memory[node_id]["bytes_per_key_after_dump"] = (m["rss"] - mem0[node_id]["rss"]) / keys
    log("  RSS after the dumps: " + ", ".join(
        f"{n} {memory[n]['bytes_per_key_after_dump']:.0f} B/key" for n in system.peer_ids))
    out = {
        "keys": keys, "load_s": load_s, "load_keys_per_s": keys / load_s, "memory": memory,
        "compaction": {
            "window_s": window, "writes": len(lat), "latency": latency_summary(lat),
            "idle_latency": idle_latency,
            "elections": elections, "lease_lost_samples_50ms": lease_lost[0],
            "members_dumped": dumped, "leader_dump_s": dumps,
            "leader_capture_on_raft_thread_s": captures,
            "dump_size_mb": {n: s / 2**20 for n, s in sizes.items()},
        },
    }
    c = out["compaction"]
    log(f"  compaction window {window:.1f}s: {len(lat)} writes, p50 "
        f"{c['latency'].get('p50_ms', 0):.2f} ms p99 {c['latency'].get('p99_ms', 0):.1f} ms "
        f"max {c['latency'].get('max_ms', 0):.0f} ms, elections {elections}, leader dump(s) "
        f"{[round(d, 2) for d in dumps]} s (Raft-thread copy {[round(c, 3) for c in captures]} s), "
        f"dumped {dumped}")
    return out


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0.0


# -- hot-path profile ------------------------------------------------------------------------
CATEGORIES = [
    # (category, predicate on (file, line, function)) -- first match wins, on tottime
    ("wait: epoll (network round trip + followers)", lambda f, fn: "poll" in fn and f == "~"),
    ("fsync (journal group commit)", lambda f, fn: "fsync" in fn or "fdatasync" in fn),
    ("socket send/recv syscalls", lambda f, fn: f == "~" and ("socket" in fn and
                                                               ("send" in fn or "recv" in fn))),
    ("pickle + zlib (PySyncObj wire)", lambda f, fn: f == "~" and ("pickle" in fn or
                                                                     "zlib" in fn or
                                                                     "compress" in fn)),
    ("msgpack (commands, values)", lambda f, fn: f == "~" and "msgpack" in fn),
    ("file writes (journal os.write)", lambda f, fn: f == "~" and "posix.write" in fn),
    ("waiting for the tick thread (lock/Event)", lambda f, fn: f == "~" and
     ("acquire" in fn or "wait" in fn)),
    ("hastate state machine (Python)", lambda f, fn: "/hastate/state/" in f),
    ("hastate journal (Python)", lambda f, fn: "/hastate/consensus/journal.py" in f),
    ("hastate consensus/node/lease (Python)", lambda f, fn: "/hastate/consensus/" in f),
    ("hastate manager (Python)", lambda f, fn: "/hastate/manager.py" in f),
    ("PySyncObj (Python)", lambda f, fn: "/pysyncobj/" in f),
    ("other built-ins", lambda f, fn: f == "~"),
    ("other Python", lambda f, fn: True),
]


def categorize(stats: pstats.Stats, ops: int) -> dict[str, float]:
    """tottime per category in microseconds per write."""
    out: dict[str, float] = {}
    for (file, _line, fn), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for name, pred in CATEGORIES:
            if pred(file, fn):
                out[name] = out.get(name, 0.0) + tt / ops * 1e6
                break
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def call_counts(stats: pstats.Stats, ops: int, names: list[str]) -> dict[str, float]:
    """Calls per write of functions whose name contains one of ``names``."""
    out: dict[str, float] = {}
    for (file, line, fn), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for name in names:
            if name in fn:
                key = f"{fn} ({Path(file).name}:{line})" if file != "~" else fn
                out[key] = round(nc / ops, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _report(stats: pstats.Stats, title: str) -> str:
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    buf.write(f"==== {title}: by tottime\n")
    stats.sort_stats("tottime").print_stats(30)
    buf.write(f"==== {title}: by cumulative\n")
    stats.sort_stats("cumulative").print_stats(30)
    return buf.getvalue()


def profile(system: Any, out_dir: Path, ops: int, pyspy_seconds: float) -> dict[str, Any]:
    """cProfile the driver thread and the leader's tick thread over ``ops`` save_state calls.

    Also samples one follower process with py-spy (if installed) while the driver writes,
    so the follower's share shows up too. Writes text reports to ``out_dir/profile``.
    """
    sm = system.sm
    system.ensure_leader()
    value = VALUES[64]
    pdir = out_dir / "profile"
    pdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"ops": ops}

    # 1. plain run for the reference latency and CPU, with py-spy on a follower's tick thread
    follower_pid = system.server_pids()[0]
    spy_box: list[Any] = []
    spy = None
    if shutil.which("py-spy"):
        spy = threading.Thread(target=lambda: spy_box.append(pyspy_sample(
            follower_pid, int(pyspy_seconds - 1), delay=0.5, rate=500)), daemon=True)
        spy.start()
    cpu0 = (time.process_time(), proc_cpu(follower_pid))
    run = run_sequential(lambda i: sm.save_state({f"k{i % 1024}": value}), pyspy_seconds)
    cpu1 = (time.process_time(), proc_cpu(follower_pid))
    n = max(1, len(run.latencies))
    result["plain"] = {"writes": n, "latency": latency_summary(run.latencies),
                       "driver_process_cpu_us_per_write": (cpu1[0] - cpu0[0]) / n * 1e6,
                       "follower_cpu_us_per_write": (cpu1[1] - cpu0[1]) / n * 1e6}
    if spy is not None:
        spy.join(pyspy_seconds + 30)
        top = spy_box[0] if spy_box else None
        if top:  # per-write microseconds of the follower's tick thread, by line
            writes_in_window = n / run.elapsed * top["seconds"]
            top["us_per_write"] = [[name, round(share * top["samples"] / top["rate_hz"]
                                                / writes_in_window * 1e6, 1)]
                                   for name, share in top["top_self_share"]]
        result["follower_pyspy"] = top
    else:
        result["follower_pyspy"] = "py-spy not installed"

    # 2. cProfile: driver thread + tick thread of the in-process leader
    tick = cProfile.Profile()
    main = cProfile.Profile()
    started, stopped = threading.Event(), threading.Event()
    sm.node.call_soon(lambda: (tick.enable(), started.set()))
    started.wait(5)
    main.enable()
    t0 = time.perf_counter()
    for i in range(ops):
        sm.save_state({f"k{i % 1024}": value})
    wall = time.perf_counter() - t0
    main.disable()
    sm.node.call_soon(lambda: (tick.disable(), stopped.set()))
    stopped.wait(5)
    st_tick = pstats.Stats(tick)
    st_main = pstats.Stats(main)
    (pdir / "leader-tick-thread.txt").write_text(_report(st_tick, "leader tick thread"))
    (pdir / "driver-thread.txt").write_text(_report(st_main, "driver thread (save_state)"))
    tick.dump_stats(str(pdir / "leader-tick-thread.pstats"))
    main.dump_stats(str(pdir / "driver-thread.pstats"))
    result["cprofile"] = {
        "wall_us_per_write": wall / ops * 1e6,
        "tick_thread_us_per_write": categorize(st_tick, ops),
        "driver_thread_us_per_write": categorize(st_main, ops),
        "tick_calls_per_write": call_counts(st_tick, ops, [
            "fdatasync", "fsync", "poll", "sendAppendEntries", "_checkCommandsToApply",
            "after_tick", "apply_at", "_remember", "send", "dumps", "compress", "decompress",
            "loads", "doTick", "onMessageReceived", "flush"]),
    }
    log(f"profile: plain p50 {result['plain']['latency'].get('p50_ms', 0):.3f} ms; under "
        f"cProfile {result['cprofile']['wall_us_per_write']:.0f} us/write; reports in {pdir}")
    return result


def pyspy_sample(pid: int, seconds: float, delay: float = 0.0, rate: int = 250,
                 top: int = 12, thread: str = "hastate-raft") -> dict[str, Any] | None:
    """Sample ``pid`` with py-spy for ``seconds``: the Raft tick thread's busy share and the
    Python lines it spends its samples in (self time; py-spy leaves idle threads out)."""
    time.sleep(delay)
    out = CLEANUP.tempdir("pyspy") / "raw.txt"
    try:
        subprocess.run(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
                        "--rate", str(rate), "--format", "raw", "--threads", "--nonblocking",
                        "-o", str(out)], capture_output=True, timeout=seconds + 30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not out.exists():
        return None
    leaf: dict[str, int] = {}
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or thread not in frames[0]:
            continue
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + int(count)
        total += int(count)
    CLEANUP.remove_dir(out.parent)
    return {"thread": thread, "samples": total, "seconds": int(seconds), "rate_hz": rate,
            "busy_share": round(total / (rate * int(seconds)), 3),
            "top_self_share": [[name, round(cnt / max(1, total), 3)] for name, cnt in
                               sorted(leaf.items(), key=lambda kv: -kv[1])[:top]]}
