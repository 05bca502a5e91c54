"""Workload drivers, identical for every system, and the :class:`System` interface they drive.

Every write puts one key of a 1024-key space (so the state stays small and reads hit), with
a value of 64 B or 4 KiB of random bytes generated once per run. Latency is measured with
``time.perf_counter`` around each synchronous call, or from submit to callback for the
pipelined (asynchronous) workload.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from benchmarks.common import CpuMeter, cdf_points, latency_summary, log

KEYSPACE = 1024
#: Driver threads for the pipelined workload of a system without an async API (etcd's HTTP).
PIPE_THREADS = 64
#: Proposals in flight for the pipelined workload of systems with an async callback path:
#: 10000, but at most 4 MiB of values (1024 for 4 KiB values).
PIPE_WINDOW = 10000
PIPE_WINDOW_BYTES = 4 * 2**20

VALUES = {64: os.urandom(64), 4096: os.urandom(4096)}


class System:
    """What a benchmarked cluster offers the drivers."""

    name = "system"
    #: How the driver talks to it (printed with the results).
    client = ""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def put(self, key: str, value: bytes) -> None:
        """Synchronous write: returns once committed (raises on failure)."""
        raise NotImplementedError

    #: Asynchronous write ``submit(key, value, done(ok))``, or None (drive with threads).
    submit: Callable[[str, bytes, Callable[[bool], None]], None] | None = None

    def get(self, key: str, linearizable: bool) -> Any:
        raise NotImplementedError

    def server_pids(self) -> list[int]:
        """Member processes other than this one (their CPU counts per write)."""
        raise NotImplementedError

    def terms(self) -> dict[str, int]:
        """Current Raft term of every reachable member (elections = term increase)."""
        raise NotImplementedError

    def ensure_leader(self) -> None:
        """Make the member the driver talks to the leader (writes go to the leader)."""

    def info(self) -> dict[str, Any]:
        return {"client": self.client}

    def counters(self) -> dict[str, float]:
        """Monotonic counters of the driven member (e.g. journal fsyncs), diffed per workload."""
        return {}


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str            # "seq" | "conc" | "pipe" | "read"
    size: int = 64       # value bytes
    threads: int = 1
    linearizable: bool = True
    label: str = ""


WORKLOADS = [
    Workload("write-seq-64B", "seq", 64, label="sequential sync write, 64 B"),
    Workload("write-seq-4KiB", "seq", 4096, label="sequential sync write, 4 KiB"),
    Workload("write-16w-64B", "conc", 64, threads=16, label="16 writer threads, 64 B"),
    Workload("write-16w-4KiB", "conc", 4096, threads=16, label="16 writer threads, 4 KiB"),
    Workload("write-pipe-64B", "pipe", 64, label="pipelined (async), 64 B"),
    Workload("write-pipe-4KiB", "pipe", 4096, label="pipelined (async), 4 KiB"),
    Workload("read-lin", "read", 64, linearizable=True, label="linearizable read"),
    Workload("read-local", "read", 64, linearizable=False, label="local read"),
]


@dataclass
class Run:
    """Raw outcome of one driver loop."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    completions: list[float] = field(default_factory=list)   # pipelined only
    first_error: str | None = None
    start: float = 0.0


def _key(i: int) -> str:
    return f"k{i % KEYSPACE}"


def run_sequential(op: Callable[[int], None], duration: float, max_ops: int = 10**7,
                   warmup: float = 0.2) -> Run:
    """Call ``op(i)`` back to back for ``duration`` seconds after a short warm-up."""
    end = time.monotonic() + warmup
    i = 0
    while time.monotonic() < end and i < 5:
        op(i)
        i += 1
    run = Run()
    perf = time.perf_counter
    start = perf()
    end_t = start + duration
    lat = run.latencies
    n = 0
    while n < max_ops:
        t0 = perf()
        if t0 >= end_t:
            break
        try:
            op(i + n)
        except Exception as exc:
            run.errors += 1
            run.first_error = run.first_error or repr(exc)
        else:
            lat.append(perf() - t0)
        n += 1
    run.elapsed = perf() - start
    return run


def run_threads(op: Callable[[int, int], None], threads: int, duration: float) -> Run:
    """``threads`` threads each call ``op(thread, i)`` back to back for ``duration`` seconds."""
    run = Run()
    perf = time.perf_counter
    barrier = threading.Barrier(threads + 1)
    stop_at = [0.0]
    lock = threading.Lock()

    def worker(t: int) -> None:
        lat: list[float] = []
        errors = 0
        first: str | None = None
        barrier.wait()
        i = 0
        while True:
            t0 = perf()
            if t0 >= stop_at[0]:
                break
            try:
                op(t, i)
            except Exception as exc:
                errors += 1
                first = first or repr(exc)
            else:
                lat.append(perf() - t0)
            i += 1
        with lock:
            run.latencies.extend(lat)
            run.errors += errors
            run.first_error = run.first_error or first

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    start = perf()
    stop_at[0] = start + duration
    barrier.wait()
    for w in workers:
        w.join(duration + 60)
    run.elapsed = perf() - start
    return run


def run_pipelined(submit: Callable[[int, Callable[[bool], None]], None], window: int,
                  duration: float, drain_timeout: float = 30.0) -> Run:
    """Keep ``window`` async writes in flight for ``duration``; count what completed in time."""
    run = Run()
    perf = time.perf_counter
    sem = threading.Semaphore(window)
    lat = run.latencies
    comp = run.completions
    errors: list[int] = []

    def make_cb(t0: float) -> Callable[[bool], None]:
        def cb(ok: bool) -> None:
            t1 = perf()
            if ok:
                lat.append(t1 - t0)
                comp.append(t1)
            else:
                errors.append(1)
            sem.release()
        return cb

    start = perf()
    run.start = start
    end = start + duration
    i = 0
    while True:
        if not sem.acquire(timeout=10):
            run.first_error = "no completion for 10 s (window stuck)"
            break
        t0 = perf()
        if t0 >= end:
            sem.release()
            break
        try:
            submit(i, make_cb(t0))
        except Exception as exc:
            errors.append(1)
            run.first_error = run.first_error or repr(exc)
            sem.release()
        i += 1
    # drain what is still in flight (not counted in the throughput, but in latency)
    deadline = time.monotonic() + drain_timeout
    got = 0
    while got < window and time.monotonic() < deadline:
        if sem.acquire(timeout=0.5):
            got += 1
    run.elapsed = duration
    run.errors = len(errors)
    return run


def execute(system: System, wl: Workload, duration: float, keep_run: bool = False) -> dict[str, Any]:
    """Run one workload against a started system; return its summary (with CPU and elections)."""
    system.ensure_leader()
    value = VALUES[wl.size]
    if wl.kind == "read":
        system.put(_key(1), value)
    terms0 = system.terms()
    counters0 = system.counters()
    meter = CpuMeter(system.server_pids())
    mode = ""
    if wl.kind == "seq":
        run = run_sequential(lambda i: system.put(_key(i), value), duration)
    elif wl.kind == "read":
        run = run_sequential(lambda i: system.get(_key(1), wl.linearizable), duration)
    elif wl.kind == "conc":
        run = run_threads(lambda t, i: system.put(_key(t * 7919 + i), value), wl.threads, duration)
    elif system.submit is not None:
        submit = system.submit
        window = min(PIPE_WINDOW, PIPE_WINDOW_BYTES // wl.size)
        mode = f"async callbacks, {window} in flight"
        run = run_pipelined(lambda i, cb: submit(_key(i), value, cb), window, duration)
    else:
        mode = f"{PIPE_THREADS} threads, one keep-alive connection each"
        run = run_threads(lambda t, i: system.put(_key(t * 7919 + i), value), PIPE_THREADS,
                          duration)
    cpu = meter.stop()
    counters1 = system.counters()
    terms1 = system.terms()
    ops = _ops_in_window(run, wl)
    out: dict[str, Any] = {
        "system": system.name, "workload": wl.name, "label": wl.label, "duration_s": duration,
        "ops": ops, "errors": run.errors, "ops_per_s": ops / run.elapsed if run.elapsed else 0.0,
        "latency": latency_summary(run.latencies), "cdf": cdf_points(run.latencies, 100),
        "cpu": cpu,
        "cpu_us_per_op": (cpu["driver_cpu_s"] + cpu["server_cpu_s"]) / max(1, len(run.latencies)) * 1e6,
        "elections": _elections(terms0, terms1), "terms": terms1,
        "loadavg_1m": os.getloadavg()[0],
    }
    if counters0:
        done = max(1, len(run.latencies))
        out["counters"] = {k: counters1.get(k, 0) - v for k, v in counters0.items()}
        out["counters_per_op"] = {k: round(v / done, 4) for k, v in out["counters"].items()}
    if mode:
        out["mode"] = mode
    if run.first_error:
        out["first_error"] = run.first_error
    if keep_run:
        out["_run"] = run
    log(f"  {system.name:<18} {wl.name:<16} {out['ops_per_s']:>9.0f} ops/s  "
        f"p50 {out['latency'].get('p50_ms', float('nan')):8.3f} ms  "
        f"p99 {out['latency'].get('p99_ms', float('nan')):8.3f} ms  errors {run.errors}"
        f"  elections {out['elections']}")
    return out


def _ops_in_window(run: Run, wl: Workload) -> int:
    if wl.kind == "pipe" and run.completions:
        # Everything submitted is drained; throughput = completed writes over the time from
        # the first submit to the last completion (ramp-up and drain included), robust to
        # queues deeper than one second of work.
        run.elapsed = max(run.completions) - run.start
        return len(run.completions)
    return len(run.latencies)


def _elections(before: dict[str, int], after: dict[str, int]) -> int:
    deltas = [after[k] - before[k] for k in after if k in before]
    return max(deltas) if deltas else 0
