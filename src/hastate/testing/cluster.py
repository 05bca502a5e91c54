"""A local cluster of real node processes on loopback: free ports, temp data dirs, cleanup.

Each node is its own OS process (``python -m hastate ...``) talking real TCP; the class
only writes the cluster file, starts and signals processes, and reads their HTTP endpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from hastate.admin_client import call
from hastate.errors import NodeUnreachableError
from hastate.testing.processes import NodeProcesses

REGIONS = ("asia-northeast1", "us-central1", "europe-west1", "southamerica-east1",
           "australia-southeast1")
ADMIN_TOKEN_ENV = "HASTATE_ADMIN_TOKEN"


#: Ports this process handed out: two nodes of one cluster file must never share one.
_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and not handed out before here.

    It lies below the kernel's ephemeral range where there is room, so no outgoing
    connection takes it as its source port while its node is down for a restart.
    """
    low, _high = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(200 if low > 12000 else 0):
        port = rng.randrange(10000, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class LocalCluster(NodeProcesses):
    """Writes ``cluster.toml`` under ``workdir`` and runs one process per node."""

    def __init__(self, workdir: str | os.PathLike[str], size: int = 3, *, name: str = "demo",
                 profile: str = "lan", snapshot_store: str | None = None,
                 snapshot_interval: float = 2.0, snapshot_keep: int = 5,
                 ship_interval: float = 1.0, transport: str = "plaintext",
                 restore_if_empty: bool = False, snapshot_mirrors: tuple[str, ...] = ()) -> None:
        super().__init__(workdir, [f"instance-{i + 1}" for i in range(size)])
        self.transport = transport
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.raft = {i: f"127.0.0.1:{free_port()}" for i in self.ids}
        self.http = {i: f"127.0.0.1:{free_port()}" for i in self.ids}
        self.admin_token = os.urandom(12).hex()
        self.config_path = self.workdir / "cluster.toml"
        lines = ["[cluster]", f'name = "{name}"', f'profile = "{profile}"',
                 f'transport = "{transport}"', f'admin_token_env = "{ADMIN_TOKEN_ENV}"', ""]
        if transport == "tls":
            tls = self.workdir / "tls"
            lines += ["[tls]", f'ca = "{tls}/ca.pem"', f'cert = "{tls}/{{id}}.pem"',
                      f'key = "{tls}/{{id}}.key"', ""]
        if snapshot_store:
            lines += ["[snapshots]", f'store = "{snapshot_store}"',
                      f"mirrors = {json.dumps(list(snapshot_mirrors))}",
                      f"interval = {snapshot_interval}", f"keep = {snapshot_keep}",
                      f"ship_interval = {ship_interval}",
                      f"restore_if_empty = {'true' if restore_if_empty else 'false'}", ""]
        for node_id in self.ids:
            lines += self._node_lines(node_id)
        self.config_path.write_text("\n".join(lines))
        if transport == "tls":
            subprocess.run([sys.executable, "-m", "hastate", "certs", "init", "--config",
                            str(self.config_path), "--out", str(self.workdir / "tls")],
                           check=True, capture_output=True)

    def add_node(self) -> str:
        """Append a new node's ``[[nodes]]`` entry to the cluster file; return its id.

        In a tls cluster its certificate is signed by the cluster CA (``certs issue``).
        Start it with ``start(id, ["node", "run", "--join"])``, then ``hastate members add``.
        """
        node_id = f"instance-{len(self.ids) + 1}"
        self.ids.append(node_id)
        self.raft[node_id] = f"127.0.0.1:{free_port()}"
        self.http[node_id] = f"127.0.0.1:{free_port()}"
        with self.config_path.open("a") as f:
            f.write("\n".join(self._node_lines(node_id)) + "\n")
        if self.transport == "tls":
            subprocess.run([sys.executable, "-m", "hastate", "certs", "issue", node_id,
                            "--ca-dir", str(self.workdir / "tls")], check=True,
                           capture_output=True)
        return node_id

    def _node_lines(self, node_id: str) -> list[str]:
        n = self.ids.index(node_id)
        return ["[[nodes]]", f'id = "{node_id}"', f'region = "{REGIONS[n % len(REGIONS)]}"',
                f'raft = "{self.raft[node_id]}"', f'http = "{self.http[node_id]}"',
                f'data_dir = "{self.workdir / "data" / node_id}"', ""]

    # -- processes ----------------------------------------------------------------------------
    def start(self, node_id: str, args: Sequence[str] | None = None) -> None:
        """Start ``node_id`` (``hastate node run`` unless other CLI ``args`` are given)."""
        argv = list(args) if args is not None else ["node", "run"]
        self.spawn(node_id, [sys.executable, "-m", "hastate", "--log-level", "INFO", *argv,
                             "--config", str(self.config_for(node_id)), "--id", node_id],
                   env=dict(os.environ, **{ADMIN_TOKEN_ENV: self.admin_token}))

    def config_for(self, node_id: str) -> Path:
        """The cluster file ``node_id`` runs with: the one file, unless a test gives each
        node its own."""
        return self.config_path

    def start_all(self, args: Sequence[str] | None = None) -> None:
        """Start every node."""
        for node_id in self.ids:
            self.start(node_id, args)

    @contextlib.contextmanager
    def processes_running(self, timeout: float = 15.0) -> Iterator["LocalCluster"]:
        """Start every node as a process, wait until all serve and one leads; stop all on exit."""
        try:
            self.start_all()
            self.wait_ready(timeout=timeout)
            self.wait_leader(timeout)
            yield self
        finally:
            self.stop_all()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # -- HTTP ---------------------------------------------------------------------------------
    def get(self, node_id: str, path: str, timeout: float = 2.0) -> Any:
        """GET a JSON endpoint of ``node_id`` (with the admin token); None when unreachable."""
        try:
            code, answer = call(node_id, self.http[node_id], path, token=self.admin_token,
                                timeout=timeout)
        except NodeUnreachableError:
            return None
        return answer if code in (200, 409, 503) else None

    def post(self, node_id: str, path: str, body: dict[str, Any], token: str | None = None,
             timeout: float = 30.0) -> tuple[int, Any]:
        """POST JSON to ``node_id``; returns (status code, decoded body)."""
        return call(node_id, self.http[node_id], path, body=body,
                    token=token if token is not None else self.admin_token, timeout=timeout)

    def status(self, node_id: str) -> dict[str, Any] | None:
        """The node's /status, or None when it does not answer."""
        return self.get(node_id, "/status")

    def leader(self, among: Sequence[str] | None = None) -> str | None:
        """The node that reports holding the leader lease, if exactly one answers so."""
        leaders = [i for i in (among or list(self.procs)) if (self.status(i) or {}).get("is_leader")]
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(self, timeout: float = 15.0, among: Sequence[str] | None = None) -> str:
        """Wait for a single lease-holding leader among ``among`` (default: running nodes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader(among)
            if leader is not None:
                return leader
            time.sleep(0.02)
        raise TimeoutError(f"no leader within {timeout}s; logs:\n{self.logs(tail=2000)}")

    def wait_ready(self, node_ids: Sequence[str] | None = None, timeout: float = 15.0) -> None:
        """Wait until every given node answers /readyz with 200."""
        deadline = time.monotonic() + timeout
        pending = set(node_ids or self.ids)
        while pending and time.monotonic() < deadline:
            for node_id in list(pending):
                st = self.status(node_id)
                if st and st.get("ready"):
                    pending.discard(node_id)
            time.sleep(0.02)
        if pending:
            raise TimeoutError(f"nodes {sorted(pending)} not ready within {timeout}s")

    def state(self, node_id: str, consistency: str = "linearizable") -> dict[str, Any] | None:
        """/state of ``node_id``: applied_index, state_hash and the decoded-as-JSON state."""
        return self.get(node_id, f"/state?consistency={consistency}", timeout=15)
