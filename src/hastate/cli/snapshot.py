"""``hastate snapshot create|take|list|verify|copy``: disaster-recovery snapshots of a cluster.

``create`` asks the Raft leader for one of its periodic snapshots now; ``take`` exports the
state of a cluster of any engine at one revision (:mod:`hastate.snapshots.portable`), which
``hastate restore --into-running`` loads into a running cluster of any engine.

Exit codes (:class:`~hastate.cli.exit.Exit`) as ``hastate restore``; ``create`` and ``take``
also: FAILED no leader, USAGE no admin token, UNAUTHORIZED token refused, REFUSED the leader
did not take the snapshot, UNREACHABLE the node did not answer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import click

from hastate.admin_client import call
from hastate.cli.dr import admin_post
from hastate.cli.exit import Exit, fail
from hastate.cli.failover import admin_token, refused_token
from hastate.cli.status import fetch_status, unreachable
from hastate.config import ClusterConfig, load_config
from hastate.errors import CorruptDataError, SnapshotError, SnapshotNotFoundError
from hastate.snapshots.copy import copy_store
from hastate.snapshots.format import list_snapshots, verify as verify_snapshot
from hastate.snapshots.store import SnapshotStore
from hastate.snapshots.stores import open_store


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
    token = admin_token(config)
    rows = fetch_status(config)
    leader = next((r for r in rows if r.get("is_leader")), None)
    if leader is None:
        fail(f"no node reports holding the leader lease{unreachable(rows)}; check "
             "`hastate status`", Exit.FAILED)
    node = config.node(leader["id"])
    http = str(node.http)                                  # it answered /status there
    code, result = call(node.id, http, "/admin/snapshot", body={}, token=token, timeout=120)
    if code == 401:
        fail(refused_token(node.id, result, config), Exit.UNAUTHORIZED)
    if code != 200:
        fail(f"{node.id} did not take the snapshot ({code}): {result.get('error')}",
             Exit.REFUSED)
    click.echo(json.dumps(result, indent=2) if as_json else
               f"snapshot {result.get('name')} at index {result.get('index')} uploaded by "
               f"{node.id}")


@snapshot.command("take")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--id", "node_id", default=None,
              help="Node that reads the state (default: the leader); any engine.")
@click.option("--to", "url", default=None,
              help="Store URL (default: <[snapshots] store>/exports).")
@click.option("--json", "as_json", is_flag=True)
def take(config_path: str, node_id: str | None, url: str | None, as_json: bool) -> None:
    """Export the cluster's state at one revision (keys, revisions, leases) to a store."""
    config = load_config(config_path)
    node, result = admin_post(config, node_id, "/admin/export",
                              {} if url is None else {"to": url}, timeout=300)
    click.echo(json.dumps(result, indent=2) if as_json else
               f"exported {result['keys']} keys and {result['leases']} leases at revision "
               f"{result['revision']} ({result['engine']} engine, read by {node}) to "
               f"{result['store']} as {result['name']}")


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
        fail(str(exc), Exit.STORE_UNAVAILABLE)
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
            fail(f"{store}: no snapshots listed", Exit.NOT_FOUND)
        for n in names:
            meta = verify_snapshot(store, n, config.name)
            click.echo(f"ok  {meta.name}  index {meta.index}  sha256 {meta.sha256[:16]}")
    except SnapshotNotFoundError as exc:
        fail(str(exc), Exit.NOT_FOUND)
    except CorruptDataError as exc:
        fail(str(exc), Exit.FAILED)
    except SnapshotError as exc:
        fail(str(exc), Exit.STORE_UNAVAILABLE)


@snapshot.command("copy")
@click.option("--from", "source", required=True, help="Store URL to copy from.")
@click.option("--to", "dest", required=True, help="Store URL to copy to (e.g. another cloud).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Cluster file; its name must match the source's (default: not checked).")
@click.option("--json", "as_json", is_flag=True)
def copy(source: str, dest: str, config_path: str | None, as_json: bool) -> None:
    """Copy snapshots, log segments and the manifest to another store, verifying both sides."""
    if source == dest:
        raise click.UsageError("--from and --to are the same store")
    cluster = load_config(config_path).name if config_path else None
    try:
        result = copy_store(open_store(source), open_store(dest), cluster=cluster)
    except SnapshotNotFoundError as exc:
        fail(str(exc), Exit.NOT_FOUND)
    except CorruptDataError as exc:
        fail(str(exc), Exit.FAILED)
    except SnapshotError as exc:
        fail(str(exc), Exit.STORE_UNAVAILABLE)
    if as_json:
        click.echo(json.dumps({**result.summary(), "from": source, "to": dest}, indent=2))
        return
    click.echo(f"copied {len(result.copied)} objects ({result.bytes_copied} B) from {source} "
               f"to {dest}, {len(result.already_present)} already there; verified on both "
               f"sides; {result.snapshots_listed} snapshots listed at the destination")
