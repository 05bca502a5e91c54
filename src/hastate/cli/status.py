"""``hastate status``: ask every node's /status and print one row per node."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import click

from hastate.config import ClusterConfig, load_config


def fetch_status(config: ClusterConfig, timeout: float = 1.0) -> list[dict[str, Any]]:
    """GET /status from every node with an http address; unreachable nodes get reachable=False."""
    rows = []
    for node in config.nodes:
        row: dict[str, Any] = {"id": node.id, "region": node.region, "reachable": False}
        if node.http:
            try:
                with urllib.request.urlopen(f"http://{node.http}/status", timeout=timeout) as r:
                    row.update(json.load(r))
                    row["reachable"] = True
            except (OSError, urllib.error.URLError, ValueError) as exc:
                row["error"] = str(getattr(exc, "reason", exc))
        rows.append(row)
    return rows


_COLUMNS = ("id", "region", "role", "term", "leader", "commit_index", "applied_index",
            "lease_remaining", "reachable")


def render_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width table of the status rows."""
    table = [[str(c) for c in _COLUMNS]] + \
        [[("-" if row.get(c) is None else str(row.get(c))) for c in _COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in table)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Cluster file (TOML).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--watch", type=float, default=None, help="Refresh every N seconds.")
def status(config_path: str, as_json: bool, watch: float | None) -> None:
    """Show every node's role, term, leader and progress. Exit 1 when no node leads."""
    config = load_config(config_path)
    while True:
        rows = fetch_status(config)
        click.echo(json.dumps(rows, indent=2) if as_json else render_table(rows))
        if watch is None:
            break
        time.sleep(watch)
        click.echo()
    if not any(row.get("is_leader") for row in rows):
        raise SystemExit(1)
