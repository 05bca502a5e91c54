"""Writes that a follower forwards to the leader, against the same writes made on the leader.

A bot instance that is not the leader still writes: its node forwards each proposal to the
leader, which appends it and answers with the entry's position. This measures 16 threads
of ``save_state`` and a pipelined ``save_state_async`` window on the in-process member,
first while it leads, then while it follows (leadership moved to ``instance-2``), in the
same cluster and run, and prints each follower figure as a ratio of the leader's. The ratio
is what to compare between commits on a shared machine.

    python -m benchmarks.follower_writes [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from benchmarks.common import CLEANUP, install_signal_handlers, log, wait_for
from benchmarks.sys_hastate import HastateSystem
from benchmarks.workloads import VALUES, run_pipelined, run_threads

WINDOW = 2000


def _measure(system: HastateSystem, seconds: float) -> dict[str, float]:
    value = VALUES[64]
    sm = system.sm
    threads = run_threads(lambda t, i: sm.save_state({f"k{(t * 7919 + i) % 1024}": value}),
                          16, seconds)
    pipe = run_pipelined(lambda i, cb: system.submit(f"k{i % 1024}", value, cb), WINDOW,
                         seconds)
    pipe_ops = len(pipe.completions) / (max(pipe.completions) - pipe.start) \
        if pipe.completions else 0.0
    log_stats = sm.node.syncobj._SyncObj__raftLog.stats
    return {"16w_ops_s": len(threads.latencies) / threads.elapsed,
            "16w_errors": threads.errors, "pipe_ops_s": pipe_ops, "pipe_errors": pipe.errors,
            "syncs": log_stats["syncs"]}


def _follow(system: HastateSystem) -> None:
    sm = system.sm
    target = system.peer_ids[0]
    sm.trigger_failover(target, timeout=10)
    wait_for(lambda: sm.node.leader_id() == target and not sm.is_leader(), 15,
             f"{target} leads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    install_signal_handlers()
    system = HastateSystem()
    results: list[dict[str, Any]] = []
    try:
        system.start()
        for round_ in range(args.rounds):
            system.ensure_leader()
            time.sleep(0.5)
            leader = _measure(system, args.seconds)
            _follow(system)
            time.sleep(0.5)
            follower = _measure(system, args.seconds)
            row = {"round": round_ + 1, "loadavg_1m": os.getloadavg()[0],
                   "leader": leader, "follower": follower,
                   "ratio_16w": follower["16w_ops_s"] / leader["16w_ops_s"],
                   "ratio_pipe": follower["pipe_ops_s"] / max(1.0, leader["pipe_ops_s"])}
            results.append(row)
            log(f"round {round_ + 1}: 16 writers leader {leader['16w_ops_s']:.0f}/s follower "
                f"{follower['16w_ops_s']:.0f}/s (x{row['ratio_16w']:.2f}); pipelined leader "
                f"{leader['pipe_ops_s']:.0f}/s follower {follower['pipe_ops_s']:.0f}/s "
                f"(x{row['ratio_pipe']:.2f}); load {row['loadavg_1m']:.2f}")
    finally:
        system.stop()
        CLEANUP.run()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
