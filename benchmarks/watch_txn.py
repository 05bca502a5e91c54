"""``python -m benchmarks.watch_txn``: watch fan-out and transaction cost on a real cluster.

A three-node cluster on loopback (instance-1 embedded in this process as the leader,
instance-2/3 real processes, profile ``lan``):

* **fan-out**: 10 watchers on the leader, each consumed by its own thread, while a writer
  pipelines ``--events`` single-key writes from 8 threads; reports events/s delivered (the
  10 watchers together and each), the write rate, and checks every watcher got every event.
* **hub fan-out**: the apply path alone (no Raft, no network): ``--hub-events`` updates
  applied with no watcher, then with 10 consuming watchers: apply rate and events/s delivered.
* **transaction vs single writes**: ``--rounds`` times, one transaction of 10 puts, then 10
  sequential ``save_state`` calls of one key each; reports ms per round of each.

Prints one JSON object (and the lines quoted in docs/watch-and-transactions.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hastate import StateManager
from hastate.state.codec import Command, encode_value
from hastate.state.machine import ReplicatedState
from hastate.state.txn import put
from hastate.state.watch import WatchHub
from hastate.testing.embedded import EmbeddedCluster


def fan_out(sm: StateManager, events: int, watchers: int) -> dict[str, Any]:
    start = sm.revision() + 1
    streams = [sm.watch("fan/", start, buffer=events + 10) for _ in range(watchers)]
    counts = [0] * watchers
    finished = [0.0] * watchers

    def consume(i: int) -> None:
        for event in streams[i]:
            counts[i] += 1
            if counts[i] == events:
                finished[i] = time.perf_counter()
                return

    threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(watchers)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: sm.save_state({f"fan/{i % 100}": i}), range(events)))
    written = time.perf_counter()
    for thread in threads:
        thread.join(120)
    for stream in streams:
        stream.cancel()
    last = max(finished)
    return {"watchers": watchers, "events": events, "all_delivered": counts == [events] * watchers,
            "write_per_s": round(events / (written - began)),
            "delivered_per_s_total": round(watchers * events / (last - began)),
            "delivered_per_s_each": round(events / (last - began))}


def hub_fan_out(events: int, watchers: int) -> dict[str, Any]:
    """The apply path alone (no Raft): apply rate without and with consuming watchers."""
    def run(n_watchers: int) -> tuple[float, float]:
        machine, hub = ReplicatedState(), WatchHub(history=1000, buffer=events + 10)
        machine.add_change_listener(hub)
        streams = [hub.watch() for _ in range(n_watchers)]
        done = [threading.Event() for _ in streams]

        def consume(i: int) -> None:
            for n, _ in enumerate(streams[i], start=1):
                if n == events:
                    done[i].set()
                    return

        for i in range(n_watchers):
            threading.Thread(target=consume, args=(i,), daemon=True).start()
        raws = [Command(op="update", values={f"k{i % 100}": encode_value("v", i)}).encode()
                for i in range(events)]
        began = time.perf_counter()
        for index, raw in enumerate(raws, start=1):
            machine.apply_at(index, raw)
        applied = time.perf_counter()
        for flag in done:
            flag.wait(120)
        delivered = time.perf_counter()
        return events / (applied - began), n_watchers * events / (delivered - began)

    alone, _ = run(0)
    with_watchers, delivered = run(watchers)
    return {"events": events, "watchers": watchers, "apply_per_s_no_watchers": round(alone),
            "apply_per_s_with_watchers": round(with_watchers),
            "delivered_per_s_total": round(delivered)}


def txn_vs_single(sm: StateManager, rounds: int) -> dict[str, Any]:
    txn_ms, single_ms = [], []
    for r in range(rounds):
        began = time.perf_counter()
        sm.transaction([], [put(f"t/{k}", r) for k in range(10)], [])
        txn_ms.append(1000 * (time.perf_counter() - began))
        began = time.perf_counter()
        for k in range(10):
            sm.save_state({f"s/{k}": r})
        single_ms.append(1000 * (time.perf_counter() - began))
    return {"rounds": rounds,
            "txn_10_ops_ms_median": round(statistics.median(txn_ms), 2),
            "single_writes_10_ms_median": round(statistics.median(single_ms), 2),
            "speedup": round(statistics.median(single_ms) / statistics.median(txn_ms), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--watchers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--hub-events", type=int, default=50000)
    args = parser.parse_args()
    hub = hub_fan_out(args.hub_events, args.watchers)
    with tempfile.TemporaryDirectory(prefix="hastate-bench-watch-") as tmp:
        with EmbeddedCluster(Path(tmp), 3, name="benchwatch").running(30, http=False) as cluster:
            sm = cluster.sm
            cluster.make_leader("instance-1")
            result = {"hub_fan_out": hub,
                      "fan_out": fan_out(sm, args.events, args.watchers),
                      "txn": txn_vs_single(sm, args.rounds)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
