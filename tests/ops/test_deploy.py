"""Deployment files: the systemd unit."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

UNIT = REPO / "cluster" / "hastate@.service"


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)   # systemd repeats some keys
    parser.optionxform = str                               # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_runs_the_instance_as_node_id_with_secrets_from_a_file() -> None:
    unit = _unit()
    service = unit["Service"]
    assert "node run" in service["ExecStart"] and "--id %i" in service["ExecStart"]
    assert service["EnvironmentFile"].startswith("/etc/hastate/")
    assert service["Restart"] == "on-failure"
    assert service["User"] != "root"
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
                      "RestrictAddressFamilies", "CapabilityBoundingSet", "SystemCallFilter"):
        assert hardening in service, hardening
    assert "SECRET" not in UNIT.read_text().split("[Unit]")[1]   # only in comments above
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    hastate = shutil.which("hastate") or sys.executable
    unit = tmp_path / "hastate@.service"
    unit.write_text(UNIT.read_text().replace("/opt/hastate/bin/hastate", hastate))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "hastate@instance-1.service")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if "hastate@" in line and "Documentation" not in line]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr


def _handshake(tmp: Path, server: tuple, client: tuple) -> bool:
    """TLS handshake between contexts built like the transport's; True when both accept."""
    import socket
    import ssl
    import threading

    from hastate.consensus import tls

    server_ctx, client_ctx = tls.server_context(*server), tls.client_context(*client)
    a, b = socket.socketpair()
    result: dict[str, bool] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
                result["server"] = True
        except (ssl.SSLError, OSError):
            result["server"] = False

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_side=False) as c:
            c.sendall(b"x")
            result["client"] = True
    except (ssl.SSLError, OSError):
        result["client"] = False
        a.close()
    thread.join(10)
    return result.get("client", False) and result.get("server", False)


def test_documented_ca_rotation_keeps_old_and_new_nodes_talking(tmp_path: Path) -> None:
    """docs/operations.md "Rotate the cluster secret", tls: a ca.pem bundle of both CAs."""
    from hastate.consensus import tls

    def pki(name: str) -> dict[str, str]:
        ca = tls.create_ca(name=f"{name} CA")
        out = {"ca": tmp_path / f"{name}-ca.pem"}
        out["ca"].write_bytes(ca.cert_pem)
        for node in ("n1", "n2"):
            issued = tls.issue_node_cert(ca, node)
            (tmp_path / f"{name}-{node}.pem").write_bytes(issued.cert_pem)
            tls.write_private(tmp_path / f"{name}-{node}.key", issued.key_pem)
        return {k: str(v) for k, v in out.items()}

    old, new = pki("old"), pki("new")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(Path(old["ca"]).read_bytes() + Path(new["ca"]).read_bytes())

    def node(ca: str, which: str, node_id: str) -> tuple:
        return (ca, str(tmp_path / f"{which}-{node_id}.pem"),
                str(tmp_path / f"{which}-{node_id}.key"))

    # before: old only; step 1: bundle + old certs; step 2: bundle + new certs; step 3: new only
    assert _handshake(tmp_path, node(old["ca"], "old", "n1"), node(str(bundle), "old", "n2"))
    assert _handshake(tmp_path, node(str(bundle), "new", "n1"), node(str(bundle), "old", "n2"))
    assert _handshake(tmp_path, node(str(bundle), "old", "n1"), node(str(bundle), "new", "n2"))
    assert _handshake(tmp_path, node(new["ca"], "new", "n1"), node(str(bundle), "new", "n2"))
    # and a node that trusts only the new CA refuses an old certificate
    assert not _handshake(tmp_path, node(new["ca"], "new", "n1"), node(old["ca"], "old", "n2"))
