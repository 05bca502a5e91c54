"""Deployment files: the systemd unit."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

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
    out = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "hastate@instance-1.service")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if "hastate@" in line and "Documentation" not in line]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr
