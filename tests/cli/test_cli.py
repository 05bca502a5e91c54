"""The operator CLI against real nodes: status, failover, members, check-config."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hastate.consensus.profiles import get_profile
from hastate.testing import BackgroundWriter, wait_for
from hastate.testing.embedded import EmbeddedCluster

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_status_of_a_healthy_cluster(ops: EmbeddedCluster) -> None:
    out = ops.cli("status", "--config", str(ops.config_path))
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    for column in ("role", "lag", "last_contact", "snapshot_age", "reachable"):
        assert column in header
    assert "OK: leader" in out.stdout
    rows = json.loads(ops.cli("status", "--config", str(ops.config_path), "--json").stdout)
    leader = [r for r in rows if r["is_leader"]]
    assert len(leader) == 1 and leader[0]["lag"] == 0 and leader[0]["snapshot_age"] is not None
    followers = [r for r in rows if not r["is_leader"]]
    assert all(r["lag"] is not None and r["last_contact"] is not None for r in followers)


def test_members_lists_every_member_and_checks_ids(ops: EmbeddedCluster) -> None:
    out = ops.cli("members", "--config", str(ops.config_path))
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("instance-")]
    assert len(rows) == 3
    assert len([row for row in rows if " leader " in row]) == 1
    listing = json.loads(ops.cli("members", "--config", str(ops.config_path), "--json").stdout)
    assert all(r["voter"] is True and r["in_file"] is True for r in listing)
    out = ops.cli("members", "add", "--config", str(ops.config_path), "instance-4")
    assert out.returncode == 2 and "unknown node id 'instance-4'" in out.stderr
    out = ops.cli("members", "remove", "--config", str(ops.config_path), "instance-9")
    assert out.returncode == 5 and "'instance-9' is not a member" in out.stderr


def test_failover_cli_to_a_named_node_under_writes(ops: EmbeddedCluster) -> None:
    leader = ops.wait_leader()
    target = next(n for n in ("instance-3", "instance-2") if n != leader)
    with BackgroundWriter(ops.sm, prefix="f") as writer:
        wait_for(lambda: len(writer.acked) > 20, what="writes flowing")
        out = ops.cli("failover", "--config", str(ops.config_path), "--to", target)
        assert out.returncode == 0, out.stderr
        took = float(re.search(rf"-> {target} in ([0-9.]+)s", out.stdout).group(1))
        assert took < 4 * get_profile("lan").max_timeout
        count = len(writer.acked)
        wait_for(lambda: len(writer.acked) > count + 20, what="writes flowing after the failover")
    assert writer.errors == []
    assert ops.wait_leader() == target
    assert writer.missing_from(ops.sm.get_state()) == []
    out = ops.cli("failover", "--config", str(ops.config_path), "--to", target)
    assert out.returncode == 0 and "already leads" in out.stdout


def test_failover_cli_errors_have_distinct_exit_codes(ops: EmbeddedCluster) -> None:
    leader = ops.wait_leader()
    other = next(n for n in ops.ids if n != leader)
    out = ops.cli("failover", "--config", str(ops.config_path), "--to", other, token="wrong")
    assert out.returncode == 4 and "refused the admin token" in out.stderr
    out = ops.cli("failover", "--config", str(ops.config_path), "--to", other, token="")
    assert out.returncode == 2 and "HASTATE_ADMIN_TOKEN" in out.stderr
    out = ops.cli("failover", "--config", str(ops.config_path), "--to", "instance-9")
    assert out.returncode == 2 and "unknown node id 'instance-9'" in out.stderr
    assert ops.wait_leader() == leader


def test_status_and_members_with_dead_nodes(plain_cluster: EmbeddedCluster) -> None:
    config = str(plain_cluster.config_path)
    leader = plain_cluster.wait_leader()
    followers = [n for n in plain_cluster.ids if n != leader]
    plain_cluster.kill(followers[0], signal.SIGKILL)
    out = plain_cluster.cli("status", "--config", config)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "DEGRADED" in out.stderr and followers[0] in out.stderr
    assert re.search(rf"^{followers[0]}\s.*\bdown\b", out.stdout, re.M)
    out = plain_cluster.cli("members", "--config", config)
    assert out.returncode == 3 and re.search(rf"^{followers[0]}\s.*\bdown\b", out.stdout, re.M)
    plain_cluster.kill(followers[1], signal.SIGKILL)
    wait_for(lambda: plain_cluster.cli("status", "--config", config).returncode == 1,
             timeout=10, interval=0.2, what="status exit 1 without a majority")
    out = plain_cluster.cli("status", "--config", config)
    assert "NO LEADER" in out.stderr
    out = plain_cluster.cli("failover", "--config", config, "--to", followers[0])
    assert out.returncode == 1 and "does not answer" in out.stderr


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    (tmp_path / "tls").mkdir(exist_ok=True)
    for name in ("ca.pem", "instance-1.pem", "instance-1.key"):   # as on instance-1's VM
        (tmp_path / "tls" / name).write_text("placeholder")
    return str(path)


GOOD = """
[cluster]
name = "prod"
profile = "multi-region"
transport = "tls"
secret_env = "HASTATE_TEST_SECRET"
admin_token_env = "HASTATE_ADMIN_TOKEN"
[tls]
ca = "tls/ca.pem"
cert = "tls/{id}.pem"
key = "tls/{id}.key"
[snapshots]
store = "file:///var/lib/hastate/snapshots"
""" + "".join(f"""
[[nodes]]
id = "instance-{i}"
region = "{region}"
raft = "10.0.{i}.2:4321"
http = "127.0.0.1:9321"
data_dir = "/var/lib/hastate/instance-{i}"
""" for i, region in ((1, "asia-northeast1"), (2, "us-central1"), (3, "europe-west1")))


def test_check_config_prints_the_timing_profile(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    p = get_profile("multi-region")
    out = _cli("check-config", path, "--json", env={"HASTATE_TEST_SECRET": "s",
                                                    "HASTATE_ADMIN_TOKEN": "t"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["warnings"] == []
    assert report["timing"] == {
        "profile": "multi-region", "max_rtt": p.max_rtt, "heartbeat": p.append_entries_period,
        "election_timeout_min": p.min_timeout, "election_timeout_max": p.max_timeout,
        "lease": round(p.lease_duration, 4), "connection_timeout": p.connection_timeout,
        "failover_bound": round(p.failover_bound, 4)}
    text = _cli("check-config", path, env={"HASTATE_TEST_SECRET": "s",
                                           "HASTATE_ADMIN_TOKEN": "t"})
    assert text.returncode == 0
    assert "heartbeat          100 ms" in text.stdout
    assert "election timeout   1.50-3.00 s" in text.stdout
    assert f"failover bound     {p.failover_bound:.2f} s" in text.stdout
    assert "transport 'tls'" in text.stdout
    # Valid, but no admin token exported here: a warning, and exit 1 only with --strict.
    warned = _cli("check-config", path)
    assert warned.returncode == 0 and "HASTATE_ADMIN_TOKEN is not set" in warned.stderr
    assert _cli("check-config", path, "--strict").returncode == 1
    # psk needs the secret in the environment of the node: warn where it is missing
    psk = _write(tmp_path, GOOD.replace('transport = "tls"', 'transport = "psk"'))
    warned = _cli("check-config", psk, env={"HASTATE_ADMIN_TOKEN": "t"})
    assert warned.returncode == 0 and "HASTATE_TEST_SECRET is not set" in warned.stderr


@pytest.mark.parametrize("change, message", [
    (('profile = "multi-region"', 'profile = "wan"'), "unknown profile 'wan'"),
    (('raft = "10.0.2.2:4321"', 'raft = "10.0.2.2"'), "write it as \"host:port\""),
    (('transport = "tls"', 'transport = "plaintext"'), "plaintext"),
    (('[tls]', '[tlsx]'), "unknown key(s) ['tlsx']"),
    (('transport = "tls"\nsecret_env = "HASTATE_TEST_SECRET"',
      'transport = "psk"'), "needs secret_env"),
    (('id = "instance-3"', 'id = "instance-1"'), "duplicate id 'instance-1'"),
])
def test_check_config_rejects_bad_files_with_the_fix(tmp_path: Path, change: tuple[str, str],
                                                     message: str) -> None:
    path = _write(tmp_path, GOOD.replace(*change))
    out = _cli("check-config", path)
    assert out.returncode == 2, out.stdout
    assert out.stderr.startswith("error: ") and message in out.stderr and path in out.stderr


def test_check_config_of_the_shipped_cluster_files() -> None:
    for name in ("local.toml", "three-region.toml"):
        out = _cli("check-config", str(REPO / "cluster" / name),
                   env={"HASTATE_CLUSTER_SECRET": "x", "HASTATE_ADMIN_TOKEN": "t"})
        assert out.returncode == 0, out.stderr
    assert _cli("check-config", "/nonexistent/cluster.toml").returncode == 2


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("HASTATE_ADMIN_TOKEN", "HASTATE_CLUSTER_SECRET", "HASTATE_TEST_SECRET")}
    return subprocess.run([sys.executable, "-m", "hastate", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, timeout=60)
