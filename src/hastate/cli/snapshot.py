"""``hastate snapshot create|list|verify``: disaster-recovery snapshots of a cluster.

Exit codes as ``hastate restore``: 1 verification failed, 2 bad arguments, 3 not found,
4 store or cluster unreachable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.error
import urllib.request

import click

from hastate.cli.exit import fail
from hastate.cli.restore import EXIT_CORRUPT, EXIT_NOT_FOUND, EXIT_STORE
from hastate.cli.status import fetch_status, unreachable
from hastate.config import ClusterConfig, load_config
from hastate.errors import CorruptDataError, SnapshotError, SnapshotNotFoundError
from hastate.snapshots.format import list_snapshots, verify as verify_snapshot
from hastate.snapshots.store import SnapshotStore, open_store


def _store(config: ClusterConfig, url: str | None) -> SnapshotStore:
    url = url or config.snapshots.store
    if url is None:
        raise click.UsageError("no --from URL and no [snapshots] store in the cluster file")
    return open_store(url)


@click.group()
def snapshot() -> None:
    """Create, list and verify disaster-recovery snapshots."""


@snapshot.command("create")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def create(config_path: str, as_json: bool) -> None:
    """Ask the leader to upload a snapshot now and wait until it is listed."""
    config = load_config(config_path)
    rows = fetch_status(config)
    leader = next((r for r in rows if r.get("is_leader")), None)
    if leader is None:
        fail(f"no node reports holding the leader lease{unreachable(rows)}; check "
             "`hastate status`", EXIT_STORE)
    node = config.node(leader["id"])
    token = config.admin_token()
    if not token:
        fail(f"set the admin token in ${config.admin_token_env or 'admin_token_env'}",
             EXIT_STORE)
    req = urllib.request.Request(f"http://{node.http}/admin/snapshot", data=b"{}",
                                 method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            result = json.load(resp)
    except urllib.error.HTTPError as exc:
        fail(f"{node.id} refused: {json.load(exc).get('error')}", EXIT_STORE)
    except OSError as exc:
        fail(f"cannot reach {node.id} at {node.http}: {exc}", EXIT_STORE)
    click.echo(json.dumps(result, indent=2) if as_json else
               f"snapshot {result.get('name')} at index {result.get('index')} uploaded by "
               f"{node.id}")


@snapshot.command("list")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--from", "url", default=None, help="Store URL (default: from the cluster file).")
@click.option("--json", "as_json", is_flag=True)
def list_(config_path: str, url: str | None, as_json: bool) -> None:
    """List snapshots in the store, newest first."""
    config = load_config(config_path)
    try:
        snaps = list_snapshots(_store(config, url))
    except SnapshotError as exc:
        fail(str(exc), EXIT_STORE)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(s) for s in snaps], indent=2))
        return
    for s in snaps:
        when = dt.datetime.fromtimestamp(s.created_at, dt.timezone.utc).isoformat(timespec="seconds")
        click.echo(f"{s.name}  index {s.index:>10}  term {s.term:>4}  keys {s.keys:>8}  "
                   f"{s.size:>10} B  {when}")
    if not snaps:
        click.echo("no snapshots yet")


@snapshot.command("verify")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--from", "url", default=None, help="Store URL (default: from the cluster file).")
@click.option("--name", default=None, help="Snapshot to verify (default: every listed one).")
def verify(config_path: str, url: str | None, name: str | None) -> None:
    """Download and check SHA-256, size, manifest agreement and cluster of snapshots."""
    config = load_config(config_path)
    try:
        store = _store(config, url)
        names = [name] if name else [s.name for s in list_snapshots(store)]
        if not names:
            fail(f"{store}: no snapshots listed", EXIT_NOT_FOUND)
        for n in names:
            meta = verify_snapshot(store, n, config.name)
            click.echo(f"ok  {meta.name}  index {meta.index}  sha256 {meta.sha256[:16]}")
    except SnapshotNotFoundError as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except CorruptDataError as exc:
        fail(str(exc), EXIT_CORRUPT)
    except SnapshotError as exc:
        fail(str(exc), EXIT_STORE)
