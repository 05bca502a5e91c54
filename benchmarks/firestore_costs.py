"""What the Firestore engine costs: documents read and written per operation, per minute of
leadership, per minute of a kept-alive lease, and the latency of each operation, on three
in-process bots against a real Firestore emulator.

Run: ``python -m benchmarks.firestore_costs [--ops 50] [--idle 30]``. Counts come from the
engine's own meter (``status()["firestore_costs"]``: every document its code reads or
writes, summed over the three bots; a listener's delivery counts one read per document per
listening bot). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from hastate import StateManager
from hastate.state import txn
from hastate.testing.firestore import FirestoreEmulator, cluster_file

IDS = ["bot-1", "bot-2", "bot-3"]


def totals(managers: list[StateManager]) -> tuple[Counter, Counter]:
    reads: Counter[str] = Counter()
    writes: Counter[str] = Counter()
    for sm in managers:
        costs = sm.status()["firestore_costs"]
        reads.update(costs["reads"])
        writes.update(costs["writes"])
    return reads, writes


def measure(managers: list[StateManager], n: int, op: Callable[[int], Any]) -> dict[str, Any]:
    """Run ``op`` n times; documents per call by label, and latency percentiles (ms)."""
    r0, w0 = totals(managers)
    seconds = []
    for i in range(n):
        start = time.perf_counter()
        op(i)
        seconds.append(time.perf_counter() - start)
    time.sleep(1.0)                       # listeners deliver the last changes
    r1, w1 = totals(managers)
    per = lambda a, b: {k: round((a[k] - b[k]) / n, 2) for k in a if a[k] != b[k]}  # noqa: E731
    ms = sorted(s * 1000 for s in seconds)
    return {"reads_per_op": per(r1, r0), "writes_per_op": per(w1, w0),
            "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1)}


def per_minute(managers: list[StateManager], seconds: float,
               during: Callable[[], Any] | None = None) -> dict[str, Any]:
    r0, w0 = totals(managers)
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        if during is not None:
            during()
        time.sleep(0.1)
    r1, w1 = totals(managers)
    scale = 60.0 / seconds
    return {"reads_per_minute": {k: round((r1[k] - r0[k]) * scale, 1) for k in r1
                                 if r1[k] != r0[k]},
            "writes_per_minute": {k: round((w1[k] - w0[k]) * scale, 1) for k in w1
                                  if w1[k] != w0[k]}}


def concurrent_writes(managers: list[StateManager], n: int) -> dict[str, Any]:
    """Every bot writes its own key n times at once: the cluster's write throughput when
    the revision counter is contended (each write retries until it wins the counter)."""
    failures: list[str] = []
    seconds: list[float] = []

    def writer(m: StateManager) -> None:
        for i in range(n):
            start = time.perf_counter()
            try:
                m.save_state({f"c/{m.instance_id}": i})
                seconds.append(time.perf_counter() - start)
            except Exception as exc:  # counted: contended writes may time out
                failures.append(type(exc).__name__)

    threads = [threading.Thread(target=writer, args=(m,)) for m in managers]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = sorted(s * 1000 for s in seconds)
    return {"writes": len(seconds), "failed": len(failures),
            "writes_per_second": round(len(seconds) / elapsed, 1),
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1) if ms else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=50)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FirestoreEmulator(Path(tmp)) as emulator:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        config = cluster_file(Path(tmp) / "cluster.toml", name="costs", ids=IDS,
                              lease_ttl="5s")
        managers = [StateManager.from_config(config, i, serve_http=False) for i in IDS]
        for sm in managers:
            sm.start()
        try:
            sm = managers[0]
            while not any(m.is_leader() for m in managers):
                time.sleep(0.1)
            sm.save_state({"warm": 1})
            out: dict[str, Any] = {"emulator": True, "bots": len(managers),
                                   "lease_ttl_s": 5.0, "renew_interval_s": 1.0}
            out["idle_cluster"] = per_minute(managers, args.idle)
            out["save_state"] = measure(managers, args.ops,
                                        lambda i: sm.save_state({"k": i}))
            out["save_state_3_keys"] = measure(
                managers, args.ops, lambda i: sm.save_state({"a": i, "b": i, "c": i}))
            out["get_state_linearizable"] = measure(managers, args.ops,
                                                    lambda i: sm.get_state(keys=["k"]))
            out["get_state_local"] = measure(
                managers, args.ops, lambda i: sm.get_state("local", keys=["k"]))

            def transaction(i: int) -> None:
                rev = sm.records(["k"])["k"][1]
                sm.transaction([txn.mod_revision("k") == rev],
                               [txn.put("k", i), txn.put("k2", i)], [txn.get("k")])

            out["transaction"] = measure(managers, args.ops, transaction)
            out["save_state_three_writers"] = concurrent_writes(managers, args.ops)
            lease = sm.grant_lease(5.0)
            sm.save_state({"held": 1}, lease=lease)
            out["lease_keepalive"] = measure(managers, args.ops, lambda i: lease.keep_alive())
            lease.keep_alive_in_background()     # every ttl/3 by default
            out["lease_kept_alive_cluster"] = per_minute(managers, args.idle)
            lease.stop_keep_alive()
            lease.revoke()
        finally:
            for m in managers:
                m.stop()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
