"""One node of a consensus-test cluster, in its own process, for either engine.

``--engine hastate`` embeds a :class:`hastate.StateManager` (the real node: durable journal,
lease, corrected follower path). ``--engine raw`` runs a plain PySyncObj 0.3.17 ``SyncObj``
with a replicated dict consumer and PySyncObj's defaults (FileJournal, forked pickle dump),
as an application would use it. Both serve the same small JSON control API
(used only by tests/consensus/harness.py), on a port it writes to ``--ctl-file``:

  GET  /status           role, term, indexes, leader, journal truncations, sampled regressions
  GET  /data             the local replica's dict
  POST /load             start writer threads; every acknowledged write is appended to
                         ``ack_file`` (os.write: survives kill -9 of this process)
  GET  /load             writer progress: acked, failed, longest gap between acks
  POST /dup              propose the same write twice (a client retry of an unknown outcome)
  GET  /exec             how often each write was executed by this replica's state machine
  POST /transfer         move leadership to a named node

With ``HASTATE_LEASE_TRACE`` set, hastate nodes log their lease intervals (``hastate.testing.lease_trace``,
a tick observer on the RaftNode) and raw nodes log every Raft state change, one JSON line each.
With ``HASTATE_DURABILITY_TRACE`` set, hastate nodes append to that file one JSON line per
journal flush (the last index made durable) and per applied write of this node's own client
(its index), each stamped with ``time.monotonic_ns()`` (one clock for every process here).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

LEADER = 2  # pysyncobj.syncobj._RAFT_STATE.LEADER


class Writers:
    """Writer threads calling ``write(key, value) -> bool`` and recording acknowledgements."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked = 0
        self.failed = 0
        self.started_at = 0.0
        self.last_ack = 0.0
        self.max_gap = 0.0
        self.running = 0
        self.stop = threading.Event()

    def ack(self, ack_fd: int, key: str) -> None:
        os.write(ack_fd, (key + "\n").encode())
        now = time.monotonic()
        with self.lock:
            self.acked += 1
            if self.last_ack:
                self.max_gap = max(self.max_gap, now - self.last_ack)
            self.last_ack = now

    def start(self, write: Callable[[str, str], bool], *, count: int, threads: int,
              prefix: str, ack_file: str, rate: float, value_size: int = 0) -> None:
        ack_fd = os.open(ack_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.started_at = time.monotonic()
        self.running = threads
        per_thread = count // threads
        interval = threads / rate if rate else 0.0

        def run(t: int) -> None:
            next_at = time.monotonic()
            try:
                for i in range(per_thread):
                    if self.stop.is_set():
                        return
                    if interval:
                        delay = next_at - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        next_at += interval
                    key = f"{prefix}-{t}-{i}"
                    if write(key, key.ljust(value_size, ".")):
                        self.ack(ack_fd, key)
                    else:
                        with self.lock:
                            self.failed += 1
            finally:
                with self.lock:
                    self.running -= 1

        for t in range(threads):
            threading.Thread(target=run, args=(t,), daemon=True).start()

    def progress(self) -> dict[str, Any]:
        with self.lock:
            return {"acked": self.acked, "failed": self.failed, "running": self.running,
                    "max_gap": self.max_gap}


class Sampler:
    """Samples a follower's log end every ms; counts decreases and ends below the commit index.

    ``read`` returns (commit index, last log index, is leader), reading the commit index
    first: it never exceeds the log end at any instant, and the log end read after it can
    only be larger, unless the log really moved backwards.
    """

    def __init__(self, read: Callable[[], tuple[int, int, bool]]) -> None:
        self.read = read
        self.regressions = 0
        self.below_commit = 0
        self.samples = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        last = None
        while True:
            try:
                commit, last_idx, leader = self.read()
            except Exception:  # racing the tick thread (or defect 3's empty log)
                time.sleep(0.001)
                continue
            self.samples += 1
            if not leader and last is not None and last_idx < last:
                self.regressions += 1
            if not leader and last_idx < commit:
                self.below_commit += 1
            last = last_idx
            time.sleep(0.001)


# -- engines --------------------------------------------------------------------------------
class HastateEngine:
    def __init__(self, node_id: str, spec: dict[str, Any]) -> None:
        from hastate import StateManager
        from hastate.state.codec import Command, encode_value
        from hastate.testing.lease_trace import trace_leases_from_env
        self._Command, self._encode_value = Command, encode_value
        peers = {n: v["raft"] for n, v in spec["nodes"].items()}
        self.sm = StateManager(node_id, peers, data_dir=os.path.join(spec["data"], node_id),
                               profile=spec.get("profile", "lan"), cluster_name=spec["cluster"],
                               write_timeout=spec.get("write_timeout", 10.0),
                               log_compaction_entries=spec.get("compaction", 5000))
        self.executed: Counter[str] = Counter()
        durability = os.environ.get("HASTATE_DURABILITY_TRACE")
        self._durability_fd = os.open(durability, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                      0o644) if durability else None
        self.sm.machine.add_listener(self._on_apply)
        trace_leases_from_env(self.sm.node)
        self.sm.start()
        if self._durability_fd is not None:
            self._trace_flushes(node_id)
        so = self.sm.node.syncobj
        self.sampler = Sampler(lambda: (so.raftCommitIndex, so.last_log_index(),
                                        so.role == "leader"))

    def _trace(self, record: dict[str, Any]) -> None:
        os.write(self._durability_fd, (json.dumps(record) + "\n").encode())

    def _trace_flushes(self, node_id: str) -> None:
        """Log the end of every journal flush that made entries durable."""
        log = self.sm.node.syncobj._SyncObj__raftLog
        flush = log.flush

        def traced_flush() -> int:
            count = flush()
            if count:
                self._trace({"node": node_id, "kind": "flush", "index": log[-1][1],
                             "t": time.monotonic_ns()})
            return count
        log.flush = traced_flush

    def _on_apply(self, index: int, _previous: int, entry: Any, entry_result: Any) -> None:
        from hastate.state.machine import applied_commands
        executed_here: set[str] = set()
        for command, result in applied_commands(entry, entry_result):
            if self._durability_fd is not None and command.client == self.sm.engine.client_id:
                self._trace({"node": self.sm.instance_id, "kind": "apply", "index": index,
                             "t": time.monotonic_ns()})
            # A dedup hit returns the first application's result, whose index is not this
            # one, unless it repeats a member of the same batch entry (counted once).
            if command.client and result and result[0] == "ok" and result[-1] == index:
                executed_here.add(f"{command.client.hex()}:{command.seq}")
        for request in executed_here:
            self.executed[request] += 1

    def status(self) -> dict[str, Any]:
        so = self.sm.node.syncobj
        log = so._SyncObj__raftLog
        return {"role": so.role, "is_leader": self.sm.is_leader(), "term": so.raftCurrentTerm,
                "leader": self.sm.leader(), "last_log_index": so.last_log_index(),
                "commit_index": so.raftCommitIndex, "applied": so.raftLastApplied,
                "truncations": log.stats["truncations"], "journal": dict(log.stats),
                "fatal": self.sm.node.fatal_error}

    def write(self, key: str, value: str) -> bool:
        try:
            self.sm.save_state({key: value})
            return True
        except Exception:
            return False

    def data(self) -> dict[str, Any]:
        return self.sm.get_state("local")

    def dup(self, key: str) -> dict[str, Any]:
        """Propose one encoded (client, seq) command twice, as a retry after a lost reply would."""
        sm = self.sm
        seq = sm.engine.next_seq()
        raw = self._Command(op="update", client=sm.engine.client_id, seq=seq,
                            values={key: self._encode_value(key, key)}).encode()
        first = sm.engine.writes.propose(raw, 10.0).result()
        second = sm.engine.writes.propose(raw, 10.0).result()
        return {"id": f"{sm.engine.client_id.hex()}:{seq}", "results": [list(first), list(second)]}

    def transfer(self, target: str) -> dict[str, Any]:
        try:
            return {"ok": True, "seconds": self.sm.trigger_failover(target, timeout=15)}
        except Exception as exc:
            return {"ok": False, "error": repr(exc)}


class RawEngine:
    """Plain PySyncObj, configured as its README shows, plus a replicated dict consumer."""

    def __init__(self, node_id: str, spec: dict[str, Any]) -> None:
        from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
        from pysyncobj.config import FAIL_REASON

        class KV(SyncObjConsumer):
            def __init__(self) -> None:
                super().__init__()
                self.data: dict[str, Any] = {}
                self.executed: dict[str, int] = {}

            @replicated
            def set(self, key: str, value: Any, req: str | None = None) -> None:
                self.data[key] = value
                if req is not None:
                    self.executed[req] = self.executed.get(req, 0) + 1

        self.node_id = node_id
        self.addresses = {n: v["raft"] for n, v in spec["nodes"].items()}
        self.fail = FAIL_REASON
        self.kv = KV()
        me = spec["nodes"][node_id]["raft"]
        others = [v["raft"] for n, v in spec["nodes"].items() if n != node_id]
        data_dir = os.path.join(spec["data"], node_id)
        os.makedirs(data_dir, exist_ok=True)
        trace = os.environ.get("HASTATE_LEASE_TRACE")
        self._trace_fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) \
            if trace else None
        conf = SyncObjConf(journalFile=os.path.join(data_dir, "raft.journal"),
                           fullDumpFile=os.path.join(data_dir, "state.dump"),
                           logCompactionMinEntries=spec.get("compaction", 5000),
                           appendEntriesUseBatch=spec.get("raw_batch", True),
                           onStateChanged=self._on_state)
        self.so = SyncObj(me, others, conf, consumers=[self.kv])
        self.truncations = 0
        self.truncated_entries = 0
        log = self.so._SyncObj__raftLog
        original = log.deleteEntriesFrom

        def counting_delete(entry_from: int) -> None:
            removed = len(log) - entry_from
            if removed > 0:
                self.truncations += 1
                self.truncated_entries += removed
            original(entry_from)

        log.deleteEntriesFrom = counting_delete
        so = self.so
        self.sampler = Sampler(lambda: (so.raftCommitIndex, so._SyncObj__raftLog[-1][1],
                                        so._isLeader()))

    def _on_state(self, old: int, new: int) -> None:
        if self._trace_fd is not None:
            line = {"node": self.node_id, "state": new, "old": old, "t": time.monotonic(),
                    "term": self.so.raftCurrentTerm if hasattr(self, "so") else None}
            os.write(self._trace_fd, (json.dumps(line) + "\n").encode())

    def status(self) -> dict[str, Any]:
        so = self.so
        leader = so._getLeader()
        return {"role": {0: "follower", 1: "candidate", 2: "leader"}[so._SyncObj__raftState],
                "is_leader": so._isLeader(), "term": so.raftCurrentTerm,
                "leader": leader.id if leader is not None else None,
                "last_log_index": so._SyncObj__raftLog[-1][1], "commit_index": so.raftCommitIndex,
                "applied": so.raftLastApplied, "truncations": self.truncations,
                "truncated_entries": self.truncated_entries, "ready": so.isReady()}

    def write(self, key: str, value: str, req: str | None = None) -> bool:
        done = threading.Event()
        box: list[int] = []

        def callback(_res: Any, err: int) -> None:
            box.append(err)
            done.set()

        self.kv.set(key, value, req, callback=callback)
        return done.wait(10) and box[0] == self.fail.SUCCESS

    def data(self) -> dict[str, Any]:
        return dict(self.kv.data)

    def dup(self, key: str) -> dict[str, Any]:
        """The same write proposed twice: PySyncObj has no session, both are applied."""
        req = f"{self.node_id}:{key}"
        return {"id": req, "results": [self.write(key, key, req), self.write(key, key, req)]}

    def transfer(self, target: str) -> dict[str, Any]:
        """transferLeadership on this (leader) node; the callback's FAIL_REASON is returned."""
        done = threading.Event()
        box: list[int] = []

        def callback(_res: Any, err: int) -> None:
            box.append(err)
            done.set()

        self.so.transferLeadership(self.addresses[target], callback=callback)
        done.wait(5)
        err = box[0] if box else None
        names = {v: k for k, v in vars(self.fail).items() if k.isupper()}
        return {"ok": err == self.fail.SUCCESS, "error": names.get(err, err)}


# -- control server ---------------------------------------------------------------------------
def serve(engine: Any, ctl_file: str) -> None:
    writers = Writers()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _reply(self, obj: Any) -> None:
            body = json.dumps(obj, default=repr).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/status":
                st = engine.status()
                st.update(regressions=engine.sampler.regressions,
                          below_commit=engine.sampler.below_commit,
                          samples=engine.sampler.samples, pid=os.getpid())
                self._reply(st)
            elif self.path == "/data":
                self._reply(engine.data())
            elif self.path == "/load":
                self._reply(writers.progress())
            elif self.path == "/exec":
                counts = engine.executed if hasattr(engine, "executed") else {}
                if not counts and hasattr(engine, "kv"):
                    counts = engine.kv.executed
                self._reply(dict(counts))
            else:
                self._reply({"error": "unknown"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path == "/load":
                writers.start(engine.write, count=body["count"], threads=body.get("threads", 1),
                              prefix=body["prefix"], ack_file=body["ack_file"],
                              rate=body.get("rate", 0.0), value_size=body.get("value_size", 0))
                self._reply({"ok": True})
            elif self.path == "/load/stop":
                writers.stop.set()
                self._reply({"ok": True})
            elif self.path == "/dup":
                self._reply(engine.dup(body["key"]))
            elif self.path == "/transfer":
                self._reply(engine.transfer(body["to"]))
            else:
                self._reply({"error": "unknown"})

    # Port 0, published through a file: no race with other processes for a "free" port.
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = ctl_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, ctl_file)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("hastate", "raw"), required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--ctl-file", required=True, help="where to write the control port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with open(args.spec) as f:
        spec = json.load(f)
    if os.environ.get("HASTATE_BENCH_NOSYNC"):  # bench_latency.py: the "fsync off" baseline
        import hastate.consensus.journal as journal
        journal._fdatasync = lambda fd: None
    engine = (HastateEngine if args.engine == "hastate" else RawEngine)(args.id, spec)
    serve(engine, args.ctl_file)


if __name__ == "__main__":
    main()
