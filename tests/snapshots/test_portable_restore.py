"""A cluster's state moves to another running cluster through ``hastate snapshot take`` and
``hastate restore --into-running`` (raft -> raft here; the same path serves every engine):
values, revision order and leases survive, a corrupt snapshot and a non-empty target are
refused with a clear error and nothing written.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner, Result

from hastate import StateManager
from hastate.cli import cli
from hastate.cli.exit import Exit
from hastate.testing import LocalCluster, wait_for
from hastate.testing.cluster import ADMIN_TOKEN_ENV
from hastate.testing.engine_files import write_engine_file

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def running(workdir: Path, size: int) -> Iterator[tuple[Path, list[StateManager]]]:
    config = LocalCluster(workdir, size, name="dr").config_path
    sms = [StateManager.from_config(config, f"instance-{i + 1}", write_timeout=15.0)
           for i in range(size)]
    with contextlib.ExitStack() as stack:
        for sm in sms:
            stack.enter_context(sm)
        wait_for(lambda: sum(sm.is_leader() for sm in sms) == 1, timeout=30, what="a leader")
        yield config, sms


def hastate(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_state_moves_between_running_clusters_and_bad_input_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "dr-token")
    store, corrupt = f"file://{tmp_path / 'store'}", tmp_path / "corrupt"
    with running(tmp_path / "a", 3) as (config, sms):
        leader = next(sm for sm in sms if sm.is_leader())
        follower = next(sm for sm in sms if sm is not leader)
        lease = leader.grant_lease(120)
        leader.save_state({"pos/btc": 1, "pos/eth": 2, "model": "v1"})
        leader.save_state({"presence/a": {"up": True}, "presence/b": 2}, lease=lease)
        leader.save_state({"pos/btc": 3, "gone": 0})
        leader.delete("gone")
        leader.save_state({"pnl": 12.5})
        source = follower.get_state()
        mods = {k: r[1] for k, r in leader.records(source).items()}
        taken = hastate("snapshot", "take", "--config", str(config), "--id",
                        follower.instance_id, "--to", store, "--json")
        assert taken.exit_code == 0, taken.output
        assert json.loads(taken.output)["revision"] == leader.revision()

    shutil.copytree(tmp_path / "store", corrupt)
    blob = next(corrupt.rglob("*.hsnap"))
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with running(tmp_path / "b", 1) as (config, (target,)):
        bad = hastate("restore", "--config", str(config), "--into-running",
                      "--from", f"file://{corrupt}")
        assert bad.exit_code == Exit.FAILED and "SHA-256" in bad.output, bad.output
        assert target.get_state() == {}

        done = hastate("restore", "--config", str(config), "--into-running", "--from", store)
        assert done.exit_code == 0, done.output
        assert target.get_state() == source
        moved = {k: r[1] for k, r in target.records(source).items()}
        assert all(moved[a] <= moved[b] for a in mods for b in mods if mods[a] < mods[b])
        assert all(moved[a] == moved[b] for a in mods for b in mods if mods[a] == mods[b])
        (restored,) = target.leases().values()
        assert restored.ttl == 120 and restored.keys == {"presence/a", "presence/b"}

        again = hastate("restore", "--config", str(config), "--into-running", "--from", store)
        assert again.exit_code == Exit.REFUSED and "already holds" in again.output


def test_restore_says_which_mode_an_engine_needs(tmp_path: Path) -> None:
    config = str(write_engine_file(tmp_path, name="dr", engine="etcd", settings={}))
    offline = hastate("restore", "--config", config, "--from", "file:///nowhere")
    assert offline.exit_code == Exit.USAGE and "--into-running" in offline.output
    mixed = hastate("restore", "--config", config, "--into-running", "--dry-run")
    assert mixed.exit_code == Exit.USAGE and "--dry-run cannot be combined" in mixed.output
