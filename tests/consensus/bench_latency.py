"""Sequential save_state latency through StateManager, journal fsync on vs off.

    python tests/consensus/bench_latency.py [--writes 2000] [--dir DIR]

Three nodes on loopback: the leader is a StateManager in this process (the embedded bot),
the two followers are node_main.py processes. "off" replaces fdatasync with a no-op on all
three nodes (the durability PySyncObj's mmap journal had); "on" is the shipped behaviour.
Not a test: prints p50/p99/max in milliseconds and writes per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hastate import StateManager  # noqa: E402
import hastate.consensus.journal as journal  # noqa: E402
from tests.consensus.harness import ProcCluster  # noqa: E402


def run(workdir: Path, writes: int, sync: bool) -> dict[str, float]:
    if sync:
        os.environ.pop("HASTATE_BENCH_NOSYNC", None)
        journal._fdatasync = real_sync
    else:
        os.environ["HASTATE_BENCH_NOSYNC"] = "1"
        journal._fdatasync = lambda fd: None
    c = ProcCluster(workdir, "hastate")
    peers = {i: v["raft"] for i, v in c.spec["nodes"].items()}
    sm = StateManager("n1", peers, data_dir=workdir / "data" / "n1", cluster_name="ctest")
    try:
        for node_id in ("n2", "n3"):
            c.start(node_id)
        sm.start(wait_ready=30)
        if not sm.is_leader():
            sm.trigger_failover("n1", timeout=15)
        latencies = []
        t0 = time.perf_counter()
        for i in range(writes):
            start = time.perf_counter()
            sm.save_state({f"k{i % 100}": i})
            latencies.append((time.perf_counter() - start) * 1000)
        elapsed = time.perf_counter() - t0
        latencies.sort()
        stats = sm.node.syncobj._SyncObj__raftLog.stats
        return {"p50": statistics.median(latencies),
                "p99": latencies[int(len(latencies) * 0.99) - 1], "max": latencies[-1],
                "per_s": writes / elapsed, "leader_syncs": stats["syncs"]}
    finally:
        sm.stop()
        c.close()


real_sync = journal._fdatasync

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="parent of the data dirs (default: cwd)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for round_ in range(args.rounds):
        for sync in (False, True):
            with tempfile.TemporaryDirectory(dir=args.dir or os.getcwd()) as d:
                r = run(Path(d), args.writes, sync)
            print(f"round {round_} fsync {'on ' if sync else 'off'}: p50 {r['p50']:.2f} ms  "
                  f"p99 {r['p99']:.2f} ms  max {r['max']:.1f} ms  {r['per_s']:.0f} writes/s  "
                  f"leader fsyncs {r['leader_syncs']}", flush=True)
