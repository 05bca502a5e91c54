"""Processes for consensus tests: one ``node_main.py`` per node, for either engine.

Every node is a real OS process talking TCP on loopback. ``kill`` sends a signal to the node's
own pid only, as ``kill -9 <pid>`` would: a child it forked (PySyncObj's dump writer) lives on
and finishes, exactly as on a real machine. ``close`` kills whole process groups, so nothing
outlives a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from hastate.testing.cluster import free_port

NODE_MAIN = Path(__file__).with_name("node_main.py")


class ProcCluster:
    """A cluster of ``size`` node processes of one ``engine`` ("hastate" or "raw")."""

    def __init__(self, workdir: Path, engine: str, size: int = 3, *, compaction: int = 5000,
                 raw_batch: bool = True, lease_trace: bool = False,
                 write_timeout: float = 10.0) -> None:
        self.workdir = workdir
        self.engine = engine
        self.ids = [f"n{i + 1}" for i in range(size)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pgids: set[int] = set()
        self.trace = workdir / "lease-trace.jsonl" if lease_trace else None
        spec = {"cluster": "ctest", "data": str(workdir / "data"), "compaction": compaction,
                "raw_batch": raw_batch, "profile": "lan", "write_timeout": write_timeout,
                "nodes": {i: {"raft": f"127.0.0.1:{free_port()}"} for i in self.ids}}
        self.spec = spec
        self.spec_path = workdir / "spec.json"
        self.spec_path.write_text(json.dumps(spec))

    # -- processes --------------------------------------------------------------------------
    def start(self, node_id: str) -> None:
        env = dict(os.environ)
        if self.trace is not None:
            env["HASTATE_LEASE_TRACE"] = str(self.trace)
        ctl_file = self._ctl_file(node_id)
        ctl_file.unlink(missing_ok=True)
        log = open(self.workdir / f"{node_id}.log", "ab")
        proc = subprocess.Popen([sys.executable, str(NODE_MAIN), "--engine", self.engine,
                                 "--id", node_id, "--spec", str(self.spec_path),
                                 "--ctl-file", str(ctl_file)],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        log.close()
        self.procs[node_id] = proc
        self.pgids.add(proc.pid)

    def start_all(self) -> None:
        for node_id in self.ids:
            self.start(node_id)

    def signal(self, node_id: str, sig: int) -> None:
        self.procs[node_id].send_signal(sig)

    def kill(self, node_id: str) -> None:
        """kill -9 of the node's pid (not its process group), then reap it."""
        proc = self.procs.pop(node_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def kill_all(self) -> None:
        """kill -9 every node at (nearly) the same instant."""
        procs = [self.procs.pop(i) for i in list(self.procs)]
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.wait(10)

    def wait_orphans(self, timeout: float = 10.0) -> None:
        """Wait until no process is left in the killed nodes' groups (forked dump writers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = [g for g in self.pgids if self._group_alive(g)
                     and g not in {p.pid for p in self.procs.values()}]
            if not alive:
                return
            time.sleep(0.05)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def close(self) -> None:
        """SIGKILL every process group this cluster started; reap the nodes."""
        for pgid in self.pgids:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(pgid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()

    def log(self, node_id: str) -> str:
        path = self.workdir / f"{node_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {i}\n{self.log(i)[-3000:]}" for i in self.ids)

    # -- control API ------------------------------------------------------------------------
    def _ctl_file(self, node_id: str) -> Path:
        return self.workdir / f"{node_id}.ctl-port"

    def _url(self, node_id: str, path: str) -> str:
        """Control URL; raises OSError until the node has published its port."""
        port = int(self._ctl_file(node_id).read_text())
        return f"http://127.0.0.1:{port}{path}"

    def get(self, node_id: str, path: str, timeout: float = 5.0) -> Any:
        try:
            with urllib.request.urlopen(self._url(node_id, path), timeout=timeout) as resp:
                return json.load(resp)
        except (OSError, ValueError):
            return None

    def post(self, node_id: str, path: str, body: dict[str, Any], timeout: float = 60.0) -> Any:
        """POST JSON to ``node_id``'s control API (the node must be up)."""
        req = urllib.request.Request(self._url(node_id, path), data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)

    def status(self, node_id: str) -> dict[str, Any] | None:
        return self.get(node_id, "/status", timeout=2.0)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")

    def leader(self, among: list[str] | None = None) -> str | None:
        """The one running node that says it leads, or None."""
        found = [i for i in (among or list(self.procs))
                 if (self.status(i) or {}).get("is_leader")]
        return found[0] if len(found) == 1 else None

    def wait_leader(self, timeout: float = 30.0, among: list[str] | None = None) -> str:
        return self.wait_for("a single leader", lambda: self.leader(among), timeout)

    def wait_applied(self, index: int, timeout: float = 30.0) -> None:
        """Every running node has applied at least ``index``."""
        def done() -> bool:
            sts = [self.status(i) for i in self.procs]
            return all(st and st["applied"] >= index for st in sts)
        self.wait_for(f"every node to apply index {index}", done, timeout)

    def start_load(self, node_id: str, *, count: int, prefix: str, threads: int = 1,
                   rate: float = 0.0, value_size: int = 0) -> Path:
        """Start writers on ``node_id``; returns the file their acknowledged keys go to."""
        ack_file = self.workdir / f"acks-{prefix}.txt"
        self.post(node_id, "/load", {"count": count, "prefix": prefix, "threads": threads,
                                     "ack_file": str(ack_file), "rate": rate,
                                     "value_size": value_size})
        return ack_file

    @staticmethod
    def acked(ack_file: Path) -> list[str]:
        if not ack_file.exists():
            return []
        return [line for line in ack_file.read_text().split("\n") if line]
