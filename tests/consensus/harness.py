"""Processes for consensus tests: one ``node_main.py`` per node, for either engine.

Every node is a real OS process talking TCP on loopback, started, killed and reaped by
:class:`hastate.testing.processes.NodeProcesses` (``kill`` signals the node's own pid, so a
dump writer PySyncObj forked lives on and finishes; ``close`` kills whole process groups).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from hastate.admin_client import call
from hastate.errors import NodeUnreachableError
from hastate.testing.cluster import free_port
from hastate.testing.processes import NodeProcesses

NODE_MAIN = Path(__file__).with_name("node_main.py")


class ProcCluster(NodeProcesses):
    """A cluster of ``size`` node processes of one ``engine`` ("hastate" or "raw")."""

    def __init__(self, workdir: Path, engine: str, size: int = 3, *, compaction: int = 5000,
                 raw_batch: bool = True, lease_trace: bool = False,
                 write_timeout: float = 10.0, durability_trace: bool = False) -> None:
        super().__init__(workdir, [f"n{i + 1}" for i in range(size)])
        self.engine = engine
        self.trace = workdir / "lease-trace.jsonl" if lease_trace else None
        self.durability_trace = workdir / "durability.jsonl" if durability_trace else None
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
        if self.durability_trace is not None:
            env["HASTATE_DURABILITY_TRACE"] = str(self.durability_trace)
        ctl_file = self._ctl_file(node_id)
        ctl_file.unlink(missing_ok=True)
        self.spawn(node_id, [sys.executable, str(NODE_MAIN), "--engine", self.engine,
                             "--id", node_id, "--spec", str(self.spec_path),
                             "--ctl-file", str(ctl_file)], env=env)

    def start_all(self) -> None:
        for node_id in self.ids:
            self.start(node_id)

    # -- control API ------------------------------------------------------------------------
    def _ctl_file(self, node_id: str) -> Path:
        return self.workdir / f"{node_id}.ctl-port"

    def _address(self, node_id: str) -> str:
        """Control address; raises OSError until the node has published its port."""
        return f"127.0.0.1:{int(self._ctl_file(node_id).read_text())}"

    def get(self, node_id: str, path: str, timeout: float = 5.0) -> Any:
        """GET from ``node_id``'s control API; None while it does not answer."""
        try:
            return call(node_id, self._address(node_id), path, timeout=timeout)[1]
        except (OSError, ValueError, NodeUnreachableError):
            return None

    def post(self, node_id: str, path: str, body: dict[str, Any], timeout: float = 60.0) -> Any:
        """POST JSON to ``node_id``'s control API (the node must be up)."""
        return call(node_id, self._address(node_id), path, body=body, timeout=timeout)[1]

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
