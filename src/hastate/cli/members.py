"""``hastate members``: the cluster's members, their role and whether they are reachable.

Membership is static: it is the ``[[nodes]]`` list of the cluster file. ``members add`` and
``members remove`` exist only to say so and point at the runbook (docs/operations.md,
"Replace a dead region"); see :data:`WHY_STATIC` for what dynamic membership would need.

Exit codes: as ``hastate status`` (0 all reachable with a leader, 1 no leader, 3 some
member down, 2 bad config or usage, including ``add``/``remove``).
"""

from __future__ import annotations

import json
from typing import Any

import click

from hastate.cli.status import classify, fetch_status
from hastate.config import load_config

WHY_STATIC = """\
hastate does not change membership at run time; the members are the [[nodes]] of the
cluster file. Changing them safely through Raft (PySyncObj's dynamicMembershipChange)
would need, and hastate does not have yet:
  * the leader lease to count acknowledgements against the *current* configuration (it is
    sized once at start; after an add it would accept too few acks: two acting leaders);
  * node ids for members that are not in the cluster file (status, transfers, metrics and
    fencing all map address <-> id from the file);
  * the Raft transport to accept membership commands (it refuses them: PySyncObj pickles
    them) and the dump/restart path to prefer the committed configuration over the file.
To replace a dead node, keep its id and address and follow docs/operations.md,
"Replace a dead region": stop it, give the new machine its address, start it empty.
"""

_COLUMNS = ("id", "region", "raft", "http", "reachable", "role", "healthy", "ready",
            "connected", "lag", "last_contact")


def member_rows(config_path: str) -> tuple[list[dict[str, Any]], int, str]:
    """Rows for every member: the file's view plus /status and the leader's view."""
    config = load_config(config_path)
    rows = fetch_status(config)
    leader = next((r for r in rows if r.get("is_leader")), None)
    view = (leader or {}).get("peers", {})
    out = []
    for node, row in zip(config.nodes, rows):
        peer = view.get(node.id, {})
        out.append({
            "id": node.id, "region": node.region, "raft": node.raft, "http": node.http,
            "reachable": row.get("reachable", False),
            "role": row.get("role") if row.get("reachable") else "down",
            "healthy": row.get("healthy"), "ready": row.get("ready"),
            # as the leader sees it (the leader itself: True)
            "connected": True if row is leader else peer.get("connected"),
            "lag": row.get("lag"), "last_contact": row.get("last_contact"),
            "error": row.get("error"),
        })
    code, verdict = classify(rows)
    return out, code, verdict


@click.group(invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Cluster file (TOML).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def members(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
    """List the cluster's members with role and reachability (membership is static)."""
    if ctx.invoked_subcommand is not None:
        return
    if not config_path:
        raise click.UsageError("--config is required")
    rows, code, verdict = member_rows(config_path)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        table = [list(_COLUMNS)] + [["-" if r.get(c) is None else str(r.get(c))
                                     for c in _COLUMNS] for r in rows]
        widths = [max(len(t[i]) for t in table) for i in range(len(_COLUMNS))]
        click.echo("\n".join("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip()
                             for t in table))
        click.echo(verdict, err=code != 0)
    raise SystemExit(code)


def _refuse(action: str) -> None:
    click.echo(f"error: `hastate members {action}` is not supported.\n{WHY_STATIC}", err=True)
    raise SystemExit(2)


@members.command("add", context_settings={"ignore_unknown_options": True,
                                          "allow_extra_args": True})
def add() -> None:
    """Not supported: membership is the cluster file's [[nodes]] (explains why)."""
    _refuse("add")


@members.command("remove", context_settings={"ignore_unknown_options": True,
                                             "allow_extra_args": True})
def remove() -> None:
    """Not supported: membership is the cluster file's [[nodes]] (explains why)."""
    _refuse("remove")
