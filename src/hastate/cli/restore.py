"""``hastate restore``: rebuild a Raft cluster's data dirs from a snapshot store, or with
``--into-running`` load a snapshot into a running cluster of any engine through one of its
nodes (``hastate snapshot take`` makes them; :mod:`hastate.snapshots.portable`).

Exit codes (:class:`~hastate.cli.exit.Exit`): OK restored (or would be, with --dry-run);
FAILED a snapshot or segment failed verification; USAGE bad arguments or config, or a target
data_dir is not empty; NOT_FOUND no snapshot matches; STORE_UNAVAILABLE the store could not be
read (missing bucket, no permission, unreachable); with ``--into-running`` also REFUSED the
running cluster already holds keys.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import click

from hastate.cli.dr import admin_post
from hastate.cli.exit import Exit, fail
from hastate.config import ClusterConfig, load_config
from hastate.consensus.seed import is_empty, seed_data_dir
from hastate.errors import ConfigError, CorruptDataError, SnapshotError, SnapshotNotFoundError
from hastate.snapshots.restore import rebuild
from hastate.snapshots.stores import open_store


def _parse_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time, e.g. "
                                 "2026-11-28T09:30:00+00:00") from None
    if when.tzinfo is None:
        raise click.BadParameter("give a timezone, e.g. 2026-11-28T09:30:00+00:00")
    return when.timestamp()


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Cluster file (TOML) whose nodes' data dirs are seeded.")
@click.option("--from", "--store", "url", default=None,
              help="Store URL: the primary, a mirror or a copy (default: [snapshots] store "
                   "of the cluster file).")
@click.option("--snapshot", "name", default=None, help="Restore this snapshot object.")
@click.option("--index", type=int, default=None, help="Point-in-time: up to this log index.")
@click.option("--time", "at_time", default=None, help="Point-in-time: up to this ISO time.")
@click.option("--id", "node_ids", multiple=True,
              help="Seed only these nodes (repeatable; default: every node in the file).")
@click.option("--fallback", is_flag=True,
              help="If the chosen snapshot fails verification, use the previous good one.")
@click.option("--dry-run", is_flag=True, help="Verify and rebuild, but write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--into-running", is_flag=True,
              help="Load the snapshot into the running cluster (any engine, no keys yet) "
                   "through its node --id (default: the leader); --from defaults to "
                   "<[snapshots] store>/exports.")
@click.option("--source-cluster", default=None,
              help="With --into-running: the cluster name the snapshot was taken from "
                   "(default: this file's).")
def restore(config_path: str, url: str | None, name: str | None, index: int | None,
            at_time: str | None, node_ids: tuple[str, ...], fallback: bool, dry_run: bool,
            as_json: bool, into_running: bool, source_cluster: str | None) -> None:
    """Restore the cluster's state from a snapshot store into empty data dirs."""
    if sum(x is not None for x in (name, index, at_time)) > 1:
        raise click.UsageError("give at most one of --snapshot, --index, --time")
    config = load_config(config_path)
    if into_running:
        _into_running(config, url, name, node_ids, as_json, source_cluster,
                      refused=[flag for flag, given in (("--index", index is not None),
                               ("--time", at_time is not None), ("--fallback", fallback),
                               ("--dry-run", dry_run)) if given])
        return
    if config.engine != "raft":
        raise click.UsageError(f"engine {config.engine!r} keeps no data dirs to seed: load "
                               "the snapshot into the running cluster with --into-running")
    url = url or config.snapshots.store
    if url is None:
        raise click.UsageError("no --from URL and no [snapshots] store in the cluster file")
    nodes = [config.node(i) for i in node_ids] if node_ids else list(config.nodes)
    busy = [str(n.data_dir) for n in nodes if not is_empty(n.data_dir)]
    if busy and not dry_run:
        fail(f"data_dir(s) {busy} already hold data; restore never overwrites: stop those "
             "nodes and move their data aside first", Exit.USAGE)
    when = _parse_time(at_time)
    try:
        store = open_store(url)
        with click.progressbar(length=1, label="replaying log segments", file=sys.stderr,
                               hidden=as_json) as bar:
            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)
            result = rebuild(store, config.name, name=name, index=index, at_time=when,
                             fallback=fallback, progress=progress)
    except SnapshotNotFoundError as exc:
        fail(str(exc), Exit.NOT_FOUND)
    except CorruptDataError as exc:
        fail(str(exc), Exit.FAILED)
    except (SnapshotError, ConfigError) as exc:
        fail(str(exc), Exit.STORE_UNAVAILABLE)
    body = result.machine.to_body()
    members = config.members()
    seeded = []
    if not dry_run:
        for node in nodes:
            seed_data_dir(node.data_dir, cluster=config.name, node_id=node.id, state_body=body,
                          index=result.index, term=result.term, members=members)
            seeded.append(node.id)
    summary = {**result.summary(), "seeded": seeded, "dry_run": dry_run, "store": url}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        base = result.snapshot.name if result.snapshot else "an empty state"
        click.echo(f"restored {result.keys} keys at index {result.index} ({base} + "
                   f"{len(result.segments)} segments), state hash "
                   f"{result.state_hash[:16]}")
        if result.stopped_at_gap is not None:
            click.echo(f"note: the shipped log has a gap after index {result.stopped_at_gap}; "
                       "replay stopped there")
        click.echo("dry run: nothing written" if dry_run else
                   f"seeded data dirs of {', '.join(seeded)}; start the nodes now")


def _into_running(config: ClusterConfig, url: str | None, name: str | None,
                  node_ids: tuple[str, ...], as_json: bool, source_cluster: str | None,
                  refused: list[str]) -> None:
    """Ask one running node to load the snapshot through the API (see the module docstring)."""
    if refused:
        raise click.UsageError(f"{', '.join(refused)} cannot be combined with --into-running")
    if len(node_ids) > 1:
        raise click.UsageError("with --into-running, --id names the one node to load through")
    body = {k: v for k, v in (("from", url), ("snapshot", name),
                              ("cluster", source_cluster)) if v is not None}
    node, result = admin_post(config, node_ids[0] if node_ids else None, "/admin/import",
                              body, timeout=3600)
    if as_json:
        click.echo(json.dumps({**result, "node": node}, indent=2))
        return
    click.echo(f"loaded {result['name']} (revision {result['source_revision']}) into the "
               f"running cluster through {node}: {result['keys']} keys in "
               f"{result['batches']} transactions (revisions {result['first_revision']}.."
               f"{result['last_revision']}), {result['leases']} leases granted again")
