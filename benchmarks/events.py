"""``python -m benchmarks.events``: event streams on a real cluster, next to eventsourcing's SQLite.

A three-node cluster on loopback (instance-1 embedded in this process as the leader,
instance-2/3 real processes, profile ``lan``):

* **append**: ``--appends`` sequential appends of one event, then of batches of 10
  (``sm.events.append``): events/s and median ms per append.
* **subscription lag**: a catch-up subscription on the leader while the appends run: the
  delay from an append's acknowledgement to its delivery (median, p99).
* **concurrent appends to different streams**: ``--writers`` threads, each appending
  ``--concurrent`` single events (then batches of 10) to a stream of its own; events/s.
  Side by side in the same run, the layout before positions were revisions: the same
  appends through a backend that also compares and bumps one namespace-wide counter key,
  queued on one local lock as that layout's appends were (:class:`OneCounterBackend`).
* **rebuild**: ``read_all`` of every event in the namespace (after ``--rebuild`` more were
  appended in batches of 100): events/s read.
* **eventsourcing recorders, side by side**: ``insert_events`` of one and of 10 stored
  events and a full ``select_notifications`` scan, on hastate's recorder and on the
  library's bundled SQLite recorder (a file on local disk), in the same run.

Prints one JSON object (quoted in docs/events.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.sqlite import SQLiteFactory
from eventsourcing.utils import Environment

from hastate.eventsourcing import HastateApplicationRecorder
from hastate.events import EventStreams, ManagerBackend, NewEvent
from hastate.events.backend import Backend
from hastate.state import txn
from hastate.state.txn import Compare, Op, TxnResult
from hastate.state.watch import Watcher
from hastate.testing.embedded import EmbeddedCluster


def timed(n: int, step: Callable[[int], Any]) -> list[float]:
    """Seconds each of ``n`` calls of ``step`` took."""
    out = []
    for i in range(n):
        began = time.perf_counter()
        step(i)
        out.append(time.perf_counter() - began)
    return out


def rate(durations: list[float], per_call: int) -> dict[str, float]:
    return {"events_per_s": round(per_call * len(durations) / sum(durations), 1),
            "median_ms": round(statistics.median(durations) * 1000, 2)}


def appends_with_lag(es: EventStreams, appends: int) -> dict[str, Any]:
    acked: dict[int, float] = {}
    delivered: dict[int, float] = {}
    sub = es.subscribe(es.head())

    def consume() -> None:
        for event in sub:
            delivered[event.position] = time.perf_counter()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()

    def append(i: int, size: int) -> None:
        result = es.append(f"bench-{i % 10}", [NewEvent("Tick", {"i": i, "k": k})
                                               for k in range(size)])
        now = time.perf_counter()
        for p in result.positions:
            acked[p] = now

    out = {"single": rate(timed(appends, lambda i: append(i, 1)), 1),
           "batch_of_10": rate(timed(appends, lambda i: append(i, 10)), 10)}
    deadline = time.monotonic() + 60
    while len(delivered) < len(acked) and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.stop()
    thread.join(5)
    # delivery can precede the writer's acknowledgement (the watch fires on apply): lag 0
    lags = sorted(max(0.0, delivered[p] - acked[p]) for p in acked if p in delivered)
    out["subscription_lag_ms"] = {
        "appended": len(acked), "delivered": len(lags),
        "median": round(statistics.median(lags) * 1000, 2),
        "p99": round(lags[max(0, int(len(lags) * 0.99) - 1)] * 1000, 2)}
    return out


class OneCounterBackend:
    """The layout before positions were revisions, for comparison: every append also
    compares and bumps one namespace-wide counter (its head), so any two appends conflict."""

    def __init__(self, inner: Backend, key: str) -> None:
        self.inner, self.key, self.index = inner, key, inner.index

    def read(self, keys: list[str], *, linearizable: bool) -> dict[str, Any]:
        return self.inner.read(keys, linearizable=linearizable)

    def records(self, keys: list[str]) -> dict[str, tuple[Any, int]]:
        return self.inner.records(keys)

    def transaction(self, compare: list[Compare], success: list[Op],
                    failure: list[Op]) -> TxnResult:
        head = self.inner.read([self.key], linearizable=False).get(self.key)
        guard = txn.missing(self.key) if head is None else txn.value(self.key) == head
        return self.inner.transaction([*compare, guard],
                                      [*success, txn.put(self.key, (head or 0) + 1)], failure)

    def watch(self, prefix: str, start_revision: int) -> Watcher:
        return self.inner.watch(prefix, start_revision)


class _OneLock:
    """Every append of the process on one local lock (that layout's ``_append_lock``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def holding(self, streams: Any) -> threading.Lock:
        return self._lock


def concurrent_appends(es: EventStreams, writers: int, appends: int,
                       size: int) -> dict[str, Any]:
    """``writers`` threads, each appending ``appends`` batches of ``size`` to its own stream."""
    tag = uuid.uuid4().hex[:8]
    barrier = threading.Barrier(writers + 1)

    def write(w: int) -> None:
        barrier.wait()
        for i in range(appends):
            es.append(f"conc-{tag}-{w}", [NewEvent("Tick", {"i": i}) for _ in range(size)])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    return {"events": writers * appends * size, "seconds": round(took, 2),
            "events_per_s": round(writers * appends * size / took, 1)}


def concurrency(sm: Any, writers: int, appends: int) -> dict[str, Any]:
    """Concurrent appends to different streams: revision positions against one counter."""
    now = EventStreams(ManagerBackend(sm), "bench-concurrent")
    before = EventStreams(OneCounterBackend(ManagerBackend(sm), "bench-counter/head"),
                          "bench-counter")
    before.locks = _OneLock()  # type: ignore[assignment]
    out: dict[str, Any] = {"writers": writers, "appends_per_writer": appends}
    for size in (1, 10):
        a = concurrent_appends(now, writers, appends, size)
        b = concurrent_appends(before, writers, appends, size)
        out[f"batch_of_{size}"] = {"revision_positions": a, "one_counter": b,
                                   "ratio": round(a["events_per_s"] / b["events_per_s"], 2)}
    return out


def peak_rss_mb(cluster: EmbeddedCluster) -> dict[str, float]:
    """Peak resident memory of every node (the embedded one shares this process)."""
    out = {cluster.embedded_id: round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    for node_id, proc in cluster.procs.items():
        status = Path(f"/proc/{proc.pid}/status")
        if proc.poll() is None and status.exists():
            hwm = next(line for line in status.read_text().splitlines()
                       if line.startswith("VmHWM"))
            out[node_id] = round(int(hwm.split()[1]) / 1024)
    return out


def rebuild(es: EventStreams, extra: int) -> dict[str, Any]:
    """Append ``extra`` more events (batches of 100), then read all of them back twice:
    ``read_all`` and a catch-up subscription from 0 (what a projection rebuild runs)."""
    began = time.perf_counter()
    for i in range(0, extra, 100):
        es.append(f"rebuild-{i % 7}", [NewEvent("Tick", {"i": i + k}) for k in range(100)])
    appended = time.perf_counter() - began
    began = time.perf_counter()
    events = es.read_all()
    took = time.perf_counter() - began
    count, last = len(events), events[-1].position
    del events
    sub = es.subscribe(0)
    began = time.perf_counter()
    replayed = 0
    for event in sub:
        replayed += 1
        if event.position == last:
            break
    replay_took = time.perf_counter() - began
    sub.stop()
    return {"appended": extra, "append_seconds": round(appended, 1),
            "events": count, "seconds": round(took, 2), "events_per_s": round(count / took, 1),
            "catch_up": {"events": replayed, "seconds": round(replay_took, 2),
                         "events_per_s": round(replayed / replay_took, 1)}}


def recorder_bench(recorder: ApplicationRecorder, inserts: int) -> dict[str, Any]:
    def stored(n: int) -> list[StoredEvent]:
        originator = uuid.uuid4()
        return [StoredEvent(originator, v + 1, "topic", b"{}") for v in range(n)]

    single = timed(inserts, lambda i: recorder.insert_events(stored(1)))
    batch = timed(inserts, lambda i: recorder.insert_events(stored(10)))
    began = time.perf_counter()
    count, start = 0, 0
    while page := recorder.select_notifications(start, 500, inclusive_of_start=False):
        count += len(page)
        start = page[-1].id
    took = time.perf_counter() - began
    return {"insert_single": rate(single, 1), "insert_batch_of_10": rate(batch, 10),
            "select_all": {"events": count, "events_per_s": round(count / took, 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--rebuild", type=int, default=20000)
    parser.add_argument("--inserts", type=int, default=200)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=100,
                        help="appends per writer in the concurrent measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hastate-bench-events-") as tmp:
        sqlite = SQLiteFactory(Environment("bench", {"SQLITE_DBNAME": str(Path(tmp) / "es.db")}))
        result: dict[str, Any] = {
            "eventsourcing_sqlite": recorder_bench(sqlite.application_recorder(), args.inserts)}
        with EmbeddedCluster(Path(tmp), 3, name="benchevents").running(30, http=False) as cluster:
            sm = cluster.sm
            cluster.make_leader("instance-1")
            es = sm.events
            result["hastate_streams"] = appends_with_lag(es, args.appends)
            result["hastate_concurrent"] = concurrency(sm, args.writers, args.concurrent)
            result["hastate_rebuild"] = rebuild(es, args.rebuild)
            result["hastate_rebuild"]["peak_rss_mb"] = peak_rss_mb(cluster)
            result["hastate_recorder"] = recorder_bench(
                HastateApplicationRecorder(ManagerBackend(sm), "bench-es"), args.inserts)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
