"""``hastate demo``: a three-region cluster story on this machine, in under a minute.

Three bot processes embed a StateManager each, built as the seed's code builds it (the
cluster file found through ``HASTATE_CONFIG``), no ``hastate node run``; each bot serves its
node's HTTP endpoints, so ``hastate status`` sees them. Whichever holds the leader lease
trades (writes state). The demo kills the leader with SIGKILL, times the failover, proves
that no acknowledged write was lost, restarts the dead node and shows it catch up.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from hastate.config import CONFIG_ENV, load_config
from hastate.errors import HAStateError
from hastate.manager import StateManager
from hastate.testing.cluster import LocalCluster


def _bot(manager: StateManager, stop: threading.Event, acks: Path) -> None:
    """The toy trading bot: acts only while it holds the lease, logs every acknowledged tick."""
    pause = acks.parent / PAUSE_FILE
    next_tick = [0]

    def recover(state: dict[str, Any]) -> None:
        next_tick[0] = int(state.get("tick", 0)) + 1

    manager.configure_failover(health_check_interval=1.0, failover_timeout=5.0,
                               recovery_callback=recover)

    def trade() -> None:
        with open(acks, "a", buffering=1) as log:
            while not stop.is_set():
                if not manager.is_leader() or next_tick[0] == 0 or pause.exists():
                    time.sleep(0.01)
                    continue
                n = next_tick[0]
                price = decimal.Decimal("64000.25") + n
                try:
                    manager.save_state({
                        "tick": n,
                        "last_processed_timestamp": dt.datetime.now(dt.timezone.utc),
                        "active_positions": [{"symbol": "BTC-USD", "qty": decimal.Decimal("0.5"),
                                              "entry": price}],
                        "model_version": "v1.2.3",
                        f"fill-{n:06d}": {"price": price, "by": manager.instance_id},
                    }, timeout=2.0)
                except HAStateError:
                    continue
                log.write(f"{n}\n")
                next_tick[0] = n + 1
                time.sleep(0.02)

    manager.watch_leader(on_lose_leadership=lambda: next_tick.__setitem__(0, 0))
    threading.Thread(target=trade, name="demo-bot", daemon=True).start()


PAUSE_FILE = "pause-trading"
PROJECT = "crypto-bot-demo"   # the cluster file's [cluster] name = the bots' project_id


def _acked(workdir: Path) -> set[int]:
    ticks: set[int] = set()
    for path in workdir.glob("live/acks-*.log"):
        ticks.update(int(line) for line in path.read_text().split())
    return ticks


def _step(text: str) -> None:
    click.secho(f"==> {text}", fg="cyan", bold=True)


@click.group(invoke_without_command=True)
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Keep the cluster files here (default: a temp dir, removed at the end).")
@click.pass_context
def demo(ctx: click.Context, workdir: str | None) -> None:
    """Run a local three-node cluster story: write, kill the leader, fail over, catch up."""
    if ctx.invoked_subcommand is not None:
        return
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="hastate-demo-"))
    try:
        _story(root)
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


@demo.command("bot", hidden=True)
@click.option("--config", "config_path", required=True)
@click.option("--id", "node_id", required=True)
def bot(config_path: str, node_id: str) -> None:
    """One demo bot process (started by ``hastate demo``): the embedded manager, no daemon."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    os.environ[CONFIG_ENV] = config_path     # as a deployment exports it for the bot
    region = load_config(config_path).node(node_id).region
    manager = StateManager(project_id=PROJECT, instance_id=node_id, region=region)
    _bot(manager, stop, Path(config_path).parent / f"acks-{node_id}.log")
    while not stop.wait(0.2):
        fatal = manager.engine.fatal_error()
        if fatal:
            raise click.ClickException(f"bot stopped to protect its data: {fatal}")
    # the manager stops at interpreter exit, as in any bot that never calls stop()


def _story(root: Path) -> None:
    started = time.monotonic()
    store = f"file://{root / 'snapshots'}"
    cluster = LocalCluster(root / "live", 3, name=PROJECT, snapshot_store=store,
                           snapshot_interval=1.0, ship_interval=0.2)
    try:
        _step("Starting three bot processes, one per 'region', each embedding a replica")
        cluster.start_all(["demo", "bot"])
        cluster.wait_ready(timeout=20)
        leader = cluster.wait_leader()
        _step(f"hastate status --config {cluster.config_path}")
        click.echo(_status_table(cluster))
        click.echo(f"    leader: {leader} (holds the lease; only it places orders)")

        _step("The leader trades for 2 seconds; every acknowledged tick is logged")
        time.sleep(2.0)
        before = cluster.status(leader)
        click.echo(f"    {len(_acked(root))} writes acknowledged, commit index "
                   f"{before['commit_index']}, term {before['term']}")

        _step(f"kill -9 {leader} (the leader)")
        killed_at = time.monotonic()
        cluster.kill(leader, signal.SIGKILL)
        survivors = [i for i in cluster.ids if i != leader]
        new_leader, first_commit = _wait_new_commit(cluster, survivors, before, killed_at)
        click.echo(f"    new leader {new_leader} committed its first write "
                   f"{first_commit:.2f}s after the kill")

        _step("Trading continues for 1.5 seconds on the new leader")
        time.sleep(1.5)
        acked = _acked(root)
        snap = cluster.state(new_leader)
        state_ticks = {int(k[5:]) for k in snap["state"] if k.startswith("fill-")}
        lost = sorted(acked - state_ticks)
        click.echo(f"    {len(acked)} acknowledged writes, {len(state_ticks)} in the state, "
                   f"lost: {len(lost)}")
        if lost:
            raise click.ClickException(f"acknowledged writes lost: {lost[:20]}")

        _step(f"Restarting {leader}; it catches up from its data_dir and the leader")
        cluster.start(leader, ["demo", "bot"])
        cluster.wait_ready([leader], timeout=20)
        (cluster.workdir / PAUSE_FILE).touch()  # the bots stop trading so the replicas can be compared
        caught = _wait_caught_up(cluster, leader, cluster.ids)
        final = cluster.state(leader, "local")
        click.echo(f"    {leader} caught up in {caught:.2f}s: all three replicas at applied index "
                   f"{final['applied_index']}, state hash {final['state_hash'][:16]}")
        _step("Disaster: every region is lost. Restoring the cluster from the snapshot store")
        time.sleep(0.5)  # one shipping interval, so the last writes are in the store
        cluster.stop_all()
        _restore_elsewhere(root, store, final)
        click.secho(f"Demo finished in {time.monotonic() - started:.1f}s: no acknowledged "
                    "write lost, one leader at a time, cluster rebuilt from its snapshots.",
                    fg="green", bold=True)
    finally:
        cluster.stop_all()


def _status_table(cluster: LocalCluster) -> str:
    """What ``hastate status`` prints for the running bots, indented."""
    out = subprocess.run([sys.executable, "-m", "hastate", "status", "--config",
                          str(cluster.config_path)], capture_output=True, text=True, timeout=60)
    return "\n".join(f"    {line}" for line in (out.stdout + out.stderr).splitlines())


def _restore_elsewhere(root: Path, store: str, final: dict[str, Any]) -> None:
    """Seed three empty data dirs from the store, start them, compare with the lost cluster."""
    rebuilt = LocalCluster(root / "rebuilt", 3, name=PROJECT, snapshot_store=store)
    out = subprocess.run([sys.executable, "-m", "hastate", "restore", "--config",
                          str(rebuilt.config_path), "--json"], capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise click.ClickException(f"restore failed: {out.stderr.strip()}")
    summary = json.loads(out.stdout)
    click.echo(f"    restored snapshot {(summary['snapshot'] or 'none').split('/')[-1]} + "
               f"{summary['segments_replayed']} shipped log segments: {summary['keys']} keys "
               f"at index {summary['index']}")
    with rebuilt:
        rebuilt.start_all()
        rebuilt.wait_ready(timeout=20)
        leader = rebuilt.wait_leader()
        state = rebuilt.state(leader)
    same = state["state_hash"] == final["state_hash"]
    click.echo(f"    rebuilt cluster elected {leader}; state hash {state['state_hash'][:16]} "
               f"{'matches' if same else 'DIFFERS FROM'} the lost cluster's")
    if not same:
        raise click.ClickException("restored state differs from the state before the disaster")


def _wait_new_commit(cluster: LocalCluster, survivors: list[str], before: dict[str, Any],
                     killed_at: float) -> tuple[str, float]:
    deadline = killed_at + 20
    while time.monotonic() < deadline:
        for node_id in survivors:
            st = cluster.status(node_id) or {}
            if st.get("is_leader") and st.get("term", 0) > before["term"] and \
                    st.get("applied_index", 0) > before["commit_index"] + 1:
                return node_id, time.monotonic() - killed_at
        time.sleep(0.01)
    raise click.ClickException("no new leader committed within 20s")


def _wait_caught_up(cluster: LocalCluster, node_id: str, nodes: list[str]) -> float:
    """Wait until every node reports the same applied index and state hash (trading paused)."""
    start = time.monotonic()
    while time.monotonic() - start < 20:
        states = [cluster.state(n, "local") for n in nodes]
        if all(states) and len({(s["revision"], s["state_hash"]) for s in states}) == 1:
            return time.monotonic() - start
        time.sleep(0.05)
    raise click.ClickException(f"{node_id} did not catch up within 20s")
