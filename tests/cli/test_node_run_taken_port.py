"""``hastate node run`` is the embedded manager plus signals: a taken http port stops it at
start with the manager's ConfigError, naming the node, the address and the file."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hastate.testing import LocalCluster

pytestmark = pytest.mark.integration


def test_node_run_on_a_taken_http_port_exits_2_naming_node_and_address(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 3, name="ports")
    host, port = cluster.http["instance-2"].rsplit(":", 1)
    with socket.socket() as holder:
        holder.bind((host, int(port)))
        holder.listen()
        out = subprocess.run([sys.executable, "-m", "hastate", "node", "run", "--config",
                              str(cluster.config_path), "--id", "instance-2"],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"node instance-2 cannot serve HTTP on {cluster.http['instance-2']}" in out.stderr
    assert "nodes.http" in out.stderr and str(cluster.config_path) in out.stderr
    assert not (tmp_path / "data" / "instance-2" / "raft.journal").exists()   # Raft never started
