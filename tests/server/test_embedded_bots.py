"""Three bots that embed their nodes (no ``hastate node run`` anywhere) are full nodes:
they serve /metrics, and the operator CLI (status, snapshot create, failover, members)
works against them unchanged and names the bots it cannot reach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hastate.cli.exit import Exit
from hastate.testing import LocalCluster, wait_for
from hastate.testing.cluster import ADMIN_TOKEN_ENV

pytestmark = pytest.mark.integration

BOT = Path(__file__).with_name("embedded_bot_main.py")


class EmbeddedBots(LocalCluster):
    """LocalCluster whose nodes are bot processes embedding StateManager."""

    def start(self, node_id: str, args: Sequence[str] | None = None) -> None:
        env = dict(os.environ, HASTATE_CONFIG=str(self.config_path),
                   **{ADMIN_TOKEN_ENV: self.admin_token})
        with open(self.workdir / f"{node_id}.log", "ab") as log:
            self.procs[node_id] = subprocess.Popen(
                [sys.executable, str(BOT), node_id], stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=self.workdir, start_new_session=True)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, **{ADMIN_TOKEN_ENV: self.admin_token})
        return subprocess.run([sys.executable, "-m", "hastate", *args, "--config",
                               str(self.config_path)], capture_output=True, text=True,
                              env=env, timeout=120)


@pytest.fixture(scope="module")
def bots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBots]:
    root = tmp_path_factory.mktemp("bots")
    cluster = EmbeddedBots(root, 3, name="crypto-bot-prod",
                           snapshot_store=f"file://{root / 'store'}", snapshot_interval=3600)
    try:
        cluster.start_all()
        cluster.wait_ready(timeout=60)
        cluster.wait_leader(timeout=30)
        yield cluster
    finally:
        cluster.stop_all()


def test_every_bot_serves_prometheus_metrics(bots: EmbeddedBots) -> None:
    leaders = 0.0
    for node_id in bots.ids:
        with urllib.request.urlopen(f"http://{bots.http[node_id]}/metrics", timeout=5) as resp:
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        info = families["hastate_info"].samples[0].labels
        assert info["node"] == node_id and info["cluster"] == "crypto-bot-prod"
        leaders += families["hastate_is_leader"].samples[0].value
        assert families["hastate_keys"].samples[0].value >= 1
    assert leaders == 1


def test_status_lists_three_bots_and_one_leader(bots: EmbeddedBots) -> None:
    out = bots.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sorted(r["id"] for r in rows) == bots.ids
    assert all(r["reachable"] and r["ready"] for r in rows)
    assert len([r for r in rows if r["is_leader"]]) == 1


def test_snapshot_create_failover_and_members_reach_the_bots(bots: EmbeddedBots) -> None:
    out = bots.cli("snapshot", "create", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["index"] >= 1
    assert "index" in bots.cli("snapshot", "list").stdout

    leader = bots.wait_leader()
    target = next(n for n in bots.ids if n != leader)
    out = bots.cli("failover", "--to", target)
    assert out.returncode == 0, out.stderr
    assert f"-> {target}" in out.stdout
    assert bots.wait_leader() == target

    out = bots.cli("members", "--json")
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    assert sorted(r["id"] for r in listing) == bots.ids
    assert all(r["voter"] and r["reachable"] for r in listing)


def test_commands_name_the_bots_they_cannot_reach(bots: EmbeddedBots) -> None:
    leader = bots.wait_leader()
    down = next(n for n in bots.ids if n != leader)
    bots.kill(down)
    try:
        out = bots.cli("status")
        assert out.returncode == Exit.DEGRADED and f"unreachable: ['{down}']" in out.stderr
        out = bots.cli("members")
        assert out.returncode == Exit.DEGRADED and down in out.stderr
        out = bots.cli("failover", "--to", down)
        assert out.returncode == Exit.FAILED and f"{down} does not answer" in out.stderr
        bots.kill(leader)         # the survivor alone cannot hold the lease
        out = wait_for(lambda: (lambda o: o if o.returncode == Exit.FAILED else None)(
            bots.cli("snapshot", "create")), timeout=30, what="snapshot create refused")
        assert "no node reports holding the leader lease" in out.stderr
        assert f"could not reach: {sorted([down, leader])[0]} (" in out.stderr
        assert all(node_id in out.stderr for node_id in (down, leader))
    finally:
        for node_id in (down, leader):
            if node_id not in bots.procs:
                bots.start(node_id)
        bots.wait_ready(timeout=60)
    wait_for(lambda: bots.cli("status").returncode == 0, timeout=30, what="all bots back")
