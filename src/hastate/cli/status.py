"""``hastate status``: ask every node's /status and print one row per node.

Exit codes (:class:`~hastate.cli.exit.Exit`): OK one leader and every node reachable and
ready; FAILED no leader (the cluster cannot take writes); DEGRADED a leader, but some node is
unreachable, not ready or unhealthy (the cluster works with less margin); USAGE bad config.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from typing import Any

import click

from hastate.admin_client import call
from hastate.cli.exit import Exit
from hastate.cli.params import DurationParam
from hastate.config import ClusterConfig, load_config
from hastate.errors import NodeUnreachableError


def fetch_status(config: ClusterConfig, timeout: float = 1.0) -> list[dict[str, Any]]:
    """GET /status from every node with an http address; unreachable nodes get reachable=False."""
    rows = []
    for node in config.nodes:
        row: dict[str, Any] = {"id": node.id, "region": node.region, "reachable": False}
        if node.http:
            try:
                code, answer = call(node.id, node.http, "/status", timeout=timeout)
            except NodeUnreachableError as exc:
                row["error"] = str(exc)
            else:
                if code == 200:
                    row.update(answer)
                    row["reachable"] = True
                else:
                    row["error"] = f"{node.id} answered /status with {code}: {answer.get('error')}"
        else:
            row["error"] = "no http address in the cluster file"
        rows.append(row)
    return enrich(rows)


def node_status(config: ClusterConfig, node_id: str, timeout: float = 1.0) -> dict[str, Any]:
    """/status of the file's node ``node_id`` (``reachable`` False when it does not answer)."""
    return fetch_status(dataclasses.replace(config, nodes=(config.node(node_id),)), timeout)[0]


def unreachable(rows: list[dict[str, Any]]) -> str:
    """``"; could not reach: ID (why), ..."`` for the rows that did not answer, else ""."""
    down = [f"{r['id']} ({r.get('error') or 'no answer'})" for r in rows
            if not r.get("reachable")]
    return f"; could not reach: {', '.join(down)}" if down else ""


def enrich(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the leader's view of each node (lag, last_contact) and the snapshot age."""
    leaders = [r for r in rows if r.get("is_leader")]
    view = leaders[0].get("peers", {}) if len(leaders) == 1 else {}
    for row in rows:
        if row.get("is_leader"):
            row["lag"], row["last_contact"] = 0, None
        else:
            peer = view.get(row["id"], {})
            row["lag"] = peer.get("lag")
            row["last_contact"] = peer.get("last_contact_age")
        snaps = row.get("snapshots")   # the node's SnapshotService status; None = no store
        if not isinstance(snaps, dict):
            row["snapshot_age"] = None
        elif snaps.get("age_seconds") is not None:
            row["snapshot_age"] = round(float(snaps["age_seconds"]), 1)
        else:   # only the lease holder uploads: "never" matters on the leader only
            row["snapshot_age"] = "never" if row.get("is_leader") else None
    return rows


def classify(rows: list[dict[str, Any]]) -> tuple[Exit, str]:
    """Exit code and a one-line verdict for a set of status rows.

    Only voters count: a node outside the leader's configuration (removed, or joining and
    not added yet) neither degrades the verdict nor makes it healthy.
    """
    leaders = [r for r in rows if r.get("is_leader")]
    voters = {m["id"] for m in leaders[0].get("members") or []} if len(leaders) == 1 else set()
    rows = [r for r in rows if (not voters or r["id"] in voters) and r.get("member") is not False]
    leaders = [r["id"] for r in rows if r.get("is_leader")]
    down = [r["id"] for r in rows if not r.get("reachable")]
    if len(leaders) != 1:
        what = "no node holds the leader lease" if not leaders else \
            f"several nodes claim the lease: {leaders}"
        hint = f"; unreachable: {down}" if down else ""
        return Exit.FAILED, (f"NO LEADER: {what}{hint}. A majority of nodes must run and "
                                "reach each other; start the stopped nodes (see "
                                "docs/operations.md).")
    sick = [r["id"] for r in rows if r.get("reachable") and
            (not r.get("ready") or not r.get("healthy", True) or r.get("fatal_error"))]
    if down or sick:
        parts = ([f"unreachable: {down}"] if down else []) + \
                ([f"not ready or unhealthy: {sick}"] if sick else [])
        return Exit.DEGRADED, (f"DEGRADED: leader {leaders[0]}, " + "; ".join(parts) +
                               ". Writes still work while a majority is up; restore the "
                               "missing node(s).")
    return Exit.OK, f"OK: leader {leaders[0]}, all {len(rows)} nodes reachable and ready"


_COLUMNS = ("id", "region", "role", "term", "leader", "commit_index", "applied_index", "lag",
            "last_contact", "snapshot_age", "lease_remaining", "reachable")
#: For engines without a Raft log: the revision instead of the log indexes.
_STORE_COLUMNS = ("id", "region", "engine", "role", "term", "leader", "revision", "lag",
                  "last_contact", "snapshot_age", "lease_remaining", "reachable")


def _columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The Raft columns unless a node that answered runs another engine."""
    engines = {r.get("engine", "raft") for r in rows if r.get("reachable")}
    return _COLUMNS if engines <= {"raft"} else _STORE_COLUMNS


def _cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if column == "role" and not row.get("reachable"):
        return "down"
    if value is None:
        return "-"
    if column == "last_contact":
        return f"{value:.2f}s"
    if column == "snapshot_age" and isinstance(value, (int, float)):
        return f"{value:.0f}s"
    return str(value)


def render_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width table of the status rows."""
    columns = _columns(rows)
    table = [[str(c) for c in columns]] + [[_cell(row, c) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
                     for r in table)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Cluster file (TOML).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--watch", type=DurationParam(minimum=0.1), default=None,
              help="Refresh every N seconds (or 500ms, 5s) until Ctrl-C.")
@click.option("--timeout", type=DurationParam(minimum=0.001), default=1.0,
              show_default=True,
              help="How long to wait for each node's answer (seconds, or 500ms).")
def status(config_path: str, as_json: bool, watch: float | None, timeout: float) -> None:
    """Show every node's role, term, progress, lag and snapshot age.

    Exit 0 when one node leads and all are reachable, 1 when no node leads, 3 when a
    leader exists but some node is down, not ready or unhealthy (docs/operations.md).
    """
    config = load_config(config_path)
    while True:
        rows = fetch_status(config, timeout)
        code, verdict = classify(rows)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            if watch is not None:
                click.echo(dt.datetime.now().strftime("%H:%M:%S"))
            click.echo(render_table(rows))
            click.echo(verdict, err=code != Exit.OK)
        if watch is None:
            break
        time.sleep(watch)
        click.echo()
    raise SystemExit(int(code))
