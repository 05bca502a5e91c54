"""Exit codes: one meaning each, documented in docs/operations.md, and used by the commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hastate.cli.exit import Exit
from hastate.testing import free_port

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_every_code_is_documented_once_under_its_name() -> None:
    table = dict(re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", DOCS.read_text(), re.M))
    assert table == {str(code.value): code.name for code in Exit}


def test_codes_scripts_rely_on_keep_their_values() -> None:
    assert (Exit.OK, Exit.FAILED, Exit.USAGE, Exit.DEGRADED, Exit.UNAUTHORIZED,
            Exit.REFUSED, Exit.INTERRUPTED) == (0, 1, 2, 3, 4, 5, 130)


def _cluster_file(tmp_path: Path) -> Path:
    """A one-node loopback cluster file whose node is not running."""
    path = tmp_path / "cluster.toml"
    path.write_text(f"""
[cluster]
name = "exit-codes"
admin_token_env = "HASTATE_TEST_ADMIN_TOKEN"
[[nodes]]
id = "instance-1"
raft = "127.0.0.1:{free_port()}"
http = "127.0.0.1:{free_port()}"
data_dir = "data/instance-1"
""")
    return path


def _cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HASTATE_TEST_ADMIN_TOKEN"}
    if token is not None:
        env["HASTATE_TEST_ADMIN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "hastate", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_failover_with_no_node_answering_is_unreachable_and_names_the_url(
        tmp_path: Path) -> None:
    config = _cluster_file(tmp_path)
    out = _cli("failover", "--config", str(config), "--to", "instance-1", token="t")
    assert out.returncode == Exit.UNREACHABLE, out.stderr
    assert "no node answered /status" in out.stderr


def test_snapshot_create_without_a_leader_fails_and_names_the_node_it_could_not_reach(
        tmp_path: Path) -> None:
    config = _cluster_file(tmp_path)
    out = _cli("status", "--config", str(config), "--json")
    assert out.returncode == Exit.FAILED
    http = re.search(r'http = "([^"]+)"', config.read_text()).group(1)
    assert f"instance-1 does not answer at http://{http}/status" in out.stdout
    out = _cli("snapshot", "create", "--config", str(config), token="t")
    assert out.returncode == Exit.FAILED and "no node reports holding the leader" in out.stderr


def test_admin_commands_without_the_token_name_the_variable_to_export(tmp_path: Path) -> None:
    config = _cluster_file(tmp_path)
    for args in (("snapshot", "create"), ("failover", "--to", "instance-1"),
                 ("members", "remove", "instance-1")):
        out = _cli(*args, "--config", str(config))
        assert out.returncode == Exit.USAGE, (args, out.stderr)
        assert "export HASTATE_TEST_ADMIN_TOKEN=" in out.stderr, (args, out.stderr)


def test_restore_of_a_missing_snapshot_is_not_found(tmp_path: Path) -> None:
    config = _cluster_file(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    out = _cli("restore", "--config", str(config), "--from", f"file://{store}",
               "--snapshot", "no-such-snapshot", "--dry-run")
    assert out.returncode == Exit.NOT_FOUND, out.stderr
    assert not (tmp_path / "data").exists()
