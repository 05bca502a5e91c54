"""Node processes by id, each in a session of its own: start, signal, kill, clean up.

The one piece of process handling under every real-process cluster of the tests, the demo
and the benchmarks (:class:`~hastate.testing.LocalCluster` for ``hastate node run``, the
consensus tests' two-engine cluster): what a node *runs* differs, how it is started, killed
and reaped does not. ``kill`` signals the node's own pid, as ``kill -9 <pid>`` would (a child
it forked lives on and finishes, as on a real machine); :meth:`NodeProcesses.close` kills
whole process groups, so nothing outlives a test.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from signal import SIGCONT, SIGKILL, SIGTERM
from typing import Mapping, Sequence


class NodeProcesses:
    """The processes of nodes ``ids``; each one's output goes to ``<workdir>/<id>.log``."""

    def __init__(self, workdir: str | os.PathLike[str], ids: Sequence[str]) -> None:
        self.workdir = Path(workdir)
        self.ids = list(ids)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pgids: set[int] = set()

    def spawn(self, node_id: str, argv: Sequence[str],
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` as node ``node_id`` in a new session, appending to its log."""
        with open(self.workdir / f"{node_id}.log", "ab") as log:
            proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                    env=dict(env) if env is not None else None,
                                    start_new_session=True)
        self.procs[node_id] = proc
        self.pgids.add(proc.pid)
        return proc

    def signal(self, node_id: str, sig: int) -> None:
        """Send ``sig`` (SIGSTOP, SIGCONT, ...) to the node's pid."""
        self.procs[node_id].send_signal(sig)

    def kill(self, node_id: str, sig: int = SIGKILL) -> None:
        """Send ``sig`` to the node's pid; for SIGKILL and SIGTERM also reap it."""
        proc = self.procs[node_id]
        proc.send_signal(sig)
        if sig in (SIGKILL, SIGTERM):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            del self.procs[node_id]

    def kill_all(self) -> None:
        """SIGKILL every running node at (nearly) the same instant, then reap them."""
        procs = [self.procs.pop(i) for i in list(self.procs)]
        for proc in procs:
            proc.send_signal(SIGKILL)
        for proc in procs:
            proc.wait(10)

    def wait_orphans(self, timeout: float = 10.0) -> None:
        """Wait until no process is left in killed nodes' groups (children they forked)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = {p.pid for p in self.procs.values()}
            if not [g for g in self.pgids if g not in running and _group_alive(g)]:
                return
            time.sleep(0.05)

    def stop_all(self) -> None:
        """Terminate every node (SIGCONT, SIGTERM, then SIGKILL after 5 s) and reap them."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, SIGCONT)
                except ProcessLookupError:
                    pass
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()

    def close(self) -> None:
        """SIGKILL every process group ever started here (paused ones too); reap the nodes."""
        for pgid in self.pgids:
            for sig in (SIGCONT, SIGKILL):
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
        """The node's captured stdout and stderr."""
        path = self.workdir / f"{node_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail: int = 3000) -> str:
        """The last ``tail`` characters of every node's log, each under a ``--- id`` line."""
        return "\n".join(f"--- {i}\n{self.log(i)[-tail:]}" for i in self.ids)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
