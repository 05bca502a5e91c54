"""``hastate leases list|revoke``: the cluster's leases, and ending one by hand.

``list`` asks the leader (else any reachable node) for its lease table (``GET /v1/leases``);
on the leader each lease shows the seconds left on its expiry clock. ``revoke ID`` ends a
lease through the log (``POST /v1/leases/revoke``), deleting its keys on every node.

Exit codes (:class:`~hastate.cli.exit.Exit`): OK done; NOT_FOUND ``revoke`` of a lease that
had already ended; USAGE bad config or no admin token; UNAUTHORIZED token refused;
UNREACHABLE no node answered; FAILED the node could not complete the revoke.
"""

from __future__ import annotations

import json
from typing import Any

import click

from hastate.admin_client import call
from hastate.cli.exit import Exit, fail
from hastate.cli.failover import admin_token, refused_token
from hastate.cli.status import fetch_status, unreachable
from hastate.config import ClusterConfig, NodeConfig, load_config


def _node(config: ClusterConfig) -> NodeConfig:
    """The leader if one answers, else the first reachable node."""
    rows = fetch_status(config)
    reachable = [r for r in rows if r.get("reachable")]
    if not reachable:
        fail(f"no node answered{unreachable(rows)}", Exit.UNREACHABLE)
    row = next((r for r in reachable if r.get("is_leader")), reachable[0])
    return config.node(row["id"])


def _ask(config: ClusterConfig, path: str, body: dict[str, Any] | None) -> tuple[str, dict]:
    token = admin_token(config)
    node = _node(config)
    code, answer = call(node.id, str(node.http), path, body=body, token=token, timeout=30)
    if code == 401:
        fail(refused_token(node.id, answer, config), Exit.UNAUTHORIZED)
    if code != 200:
        fail(f"{node.id} answered {code}: {answer.get('error')}", Exit.FAILED)
    return node.id, answer


@click.group()
def leases() -> None:
    """List leases and revoke one."""


@leases.command("list")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def list_(config_path: str, as_json: bool) -> None:
    """Every lease: id, ttl, seconds left (as the leader counts), attached keys."""
    node, answer = _ask(load_config(config_path), "/v1/leases", None)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"{len(answer['leases'])} leases (from {node}"
               f"{', the leader' if answer['leader'] else ', not the leader'})")
    for row in answer["leases"]:
        left = "-" if row["expires_in"] is None else f"{row['expires_in']:.1f}s"
        click.echo(f"{row['id']:>10}  ttl {row['ttl']:g}s  left {left:>8}  "
                   f"{', '.join(row['keys']) or '(no keys)'}")


@leases.command("revoke")
@click.argument("lease_id", type=click.IntRange(min=1))
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def revoke(lease_id: int, config_path: str) -> None:
    """End lease LEASE_ID now, deleting its keys everywhere."""
    node, answer = _ask(load_config(config_path), "/v1/leases/revoke", {"id": lease_id})
    if not answer["revoked"]:
        fail(f"lease {lease_id} had already ended (expired or revoked)", Exit.NOT_FOUND)
    click.echo(f"lease {lease_id} revoked through {node}")
