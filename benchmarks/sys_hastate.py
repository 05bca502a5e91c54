"""hastate as it ships: ``StateManager`` in this process plus two ``hastate node run`` processes.

:class:`hastate.testing.embedded.EmbeddedCluster` writes the cluster file (free loopback
ports, temp data directories) and runs instance-2 and instance-3 as real processes;
instance-1 is a :class:`hastate.StateManager` built from the same file inside the driver,
moved to leader before each workload (the trading bot writes on the leader). Writes are ``save_state``;
the pipelined workload uses ``save_state_async`` (futures); a write refused with
``OverloadedError`` makes the driver wait its ``retry_after``, as a well-behaved bot would.
Durability is whatever the checked-out code does (recorded with the git state in results).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from concurrent.futures import Future

from hastate import OverloadedError, StateManager
from hastate.testing.embedded import EmbeddedCluster

from benchmarks.common import CLEANUP, log, wait_for
from benchmarks.workloads import System


def time_dumps(sm: StateManager, durations: list[float],
               captures: list[float] | None = None) -> None:
    """Record how long each full dump (log compaction) takes on this member.

    Instrumentation only. Newer hastate copies the state on the Raft thread
    (``RaftNode._prepare_dump``, timed into ``captures``) and writes it on a background
    thread (timed into ``durations``); older hastate serialized everything on the Raft
    thread through PySyncObj's ``serializer`` (``RaftNode._serialize``, into ``durations``).
    Both are looked up when the node starts, so this must run before ``sm.start()``.
    """
    node = sm.node
    if hasattr(node, "_prepare_dump"):
        original_prepare = node._prepare_dump

        def prepare(*args: Any) -> Any:
            t0 = time.perf_counter()
            write = original_prepare(*args)
            if captures is not None:
                captures.append(time.perf_counter() - t0)

            def timed_write() -> None:
                t1 = time.perf_counter()
                try:
                    write()
                finally:
                    durations.append(time.perf_counter() - t1)
            return timed_write
        node._prepare_dump = prepare
        return
    original = node._serialize

    def timed(tmp_file: str, raft_data: Any) -> None:
        t0 = time.perf_counter()
        try:
            original(tmp_file, raft_data)
        finally:
            durations.append(time.perf_counter() - t0)
    node._serialize = timed


class HastateSystem(System):
    """hastate (EmbeddedCluster: an in-process StateManager plus two processes), benchmarked."""

    name = "hastate"

    def __init__(self, profile: str = "lan", transport: str = "plaintext") -> None:
        self.profile = profile
        self.transport = transport
        if transport != "plaintext":
            self.name = f"hastate-{transport}"
        self.client = ("in-process StateManager (instance-1, leader): save_state(); pipelined: "
                       f"save_state_async(); transport {transport}")
        self.cluster: EmbeddedCluster | None = None
        self.sm: StateManager | None = None
        self.serialize_durations: list[float] = []   # dump writes (seconds)
        self.capture_durations: list[float] = []     # Raft-thread state copies (newer code)
        self.submit = self._submit
        self.refused = {"overloaded": 0, "other": 0}   # failed writes by kind

    @property
    def peer_ids(self) -> list[str]:
        return self.cluster.ids[1:]

    def start(self) -> None:
        workdir = CLEANUP.tempdir("hastate")
        self.cluster = EmbeddedCluster(workdir, 3, name="bench", profile=self.profile,
                                       transport=self.transport)
        CLEANUP.hook(self.cluster.stop_all)
        for node_id in self.peer_ids:
            self.cluster.start(node_id)
        self.sm = self.cluster.start_embedded(http=False, prepare=lambda sm: time_dumps(
            sm, self.serialize_durations, self.capture_durations))
        self.sm.wait_ready(30)
        self.cluster.wait_ready(self.peer_ids, timeout=30)
        self.ensure_leader()
        log(f"{self.name}: 3 members up ({self.profile}, {self.transport}), leader in process")

    def stop(self) -> None:
        self.sm = None
        if self.cluster is not None:
            self.cluster.stop_embedded()
            self.cluster.stop_all()
            CLEANUP.remove_dir(self.cluster.workdir)
            self.cluster = None

    def ensure_leader(self) -> None:
        sm = self.sm
        if not sm.is_leader():
            for _ in range(3):
                try:
                    sm.trigger_failover(self.cluster.ids[0], timeout=10)
                    break
                except Exception as exc:
                    log(f"hastate: transfer to the in-process member failed ({exc}); retrying")
        wait_for(lambda: sm.is_leader() and sm.node.syncobj.caught_up_in_term(), 15,
                 "in-process hastate leader with lease")

    def put(self, key: str, value: bytes) -> None:
        try:
            self.sm.save_state({key: value})
        except OverloadedError as exc:
            self.refused["overloaded"] += 1
            time.sleep(exc.retry_after)
            raise
        except Exception:
            self.refused["other"] += 1
            raise

    def _submit(self, key: str, value: bytes, done: Callable[[bool], None]) -> None:
        future = self.sm.save_state_async({key: value})
        if future.done() and isinstance(future.exception(), OverloadedError):
            self.refused["overloaded"] += 1
            time.sleep(future.exception().retry_after)   # back off before the next submit
            done(False)
            return

        def finished(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                self.refused["overloaded" if isinstance(exc, OverloadedError) else "other"] += 1
            done(exc is None)
        future.add_done_callback(finished)

    def get(self, key: str, linearizable: bool) -> Any:
        return self.sm.get_state("linearizable" if linearizable else "local", keys=[key])

    def server_pids(self) -> list[int]:
        return [self.cluster.procs[i].pid for i in self.peer_ids if i in self.cluster.procs]

    def terms(self) -> dict[str, int]:
        out = {self.cluster.ids[0]: self.sm.node.syncobj.raftCurrentTerm}
        for node_id in self.peer_ids:
            st = self.cluster.status(node_id)
            if st:
                out[node_id] = int(st["term"])
        return out

    def counters(self) -> dict[str, float]:
        """The leader's journal counters (fsyncs, group-commit flushes, rewrites) and dumps."""
        log = getattr(self.sm.node.syncobj, "_SyncObj__raftLog", None)
        stats = dict(getattr(log, "stats", {}) or {})
        out = {f"journal_{k}": v for k, v in stats.items() if isinstance(v, (int, float))}
        out["dumps"] = len(self.serialize_durations)
        out["dump_seconds"] = sum(self.serialize_durations)
        out["dump_capture_seconds"] = sum(self.capture_durations)
        return out

    def lag(self) -> dict[str, int]:
        """Leader view: entries each follower is behind the leader's last log index."""
        so = self.sm.node.syncobj
        for _ in range(5):
            try:
                last = so.last_log_index()
                match = so.match_index()
                return {self.sm.node.id_of(a): last - m for a, m in match.items()}
            except RuntimeError:  # dict changed size while copying from another thread
                time.sleep(0.001)
        return {}

    def info(self) -> dict[str, Any]:
        prof = self.sm.spec.profile if self.sm else None
        return {"client": self.client, "profile": self.profile, "transport": self.transport,
                "settings": (f"profile {self.profile}: heartbeat {prof.append_entries_period}s, "
                             f"election {prof.min_timeout}-{prof.max_timeout}s, "
                             f"log compaction every {self.sm.spec.log_compaction_entries} "
                             "entries") if prof else ""}
