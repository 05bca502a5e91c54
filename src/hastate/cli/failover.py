"""``hastate failover --config F --to ID``: planned leadership transfer, timed.

Posts ``/admin/transfer-leadership`` to the current leader (or, when no leader answers, to
any reachable node: a transfer can be driven from any node), then waits until ID itself
reports holding the leader lease and prints how long that took.

Exit codes (:class:`~hastate.cli.exit.Exit`): OK ID leads; FAILED it did not within
--timeout; USAGE bad config (unknown ID, no admin token); UNAUTHORIZED the token was refused;
UNREACHABLE no node answered.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click

from hastate.admin_client import call
from hastate.cli.exit import Exit, fail
from hastate.cli.params import DurationParam
from hastate.cli.status import fetch_status, node_status, unreachable
from hastate.config import ClusterConfig, load_config
from hastate.errors import NodeUnreachableError


class UsageProblem(click.ClickException):
    """A problem the operator fixes in the config or environment: :attr:`Exit.USAGE`."""

    exit_code = Exit.USAGE


def admin_token(config: ClusterConfig) -> str:
    """The admin token from the environment variable ``admin_token_env`` names, or exit USAGE."""
    if not config.admin_token_env:
        raise UsageProblem("admin actions are disabled in this cluster file: add "
                                   "admin_token_env = \"HASTATE_ADMIN_TOKEN\" to [cluster] on "
                                   "every node, restart them, and export the token here")
    token = os.environ.get(config.admin_token_env)
    if not token:
        raise UsageProblem(f"environment variable {config.admin_token_env} is empty or "
                                   f"not set; export {config.admin_token_env}=<the admin token "
                                   "the nodes were started with>")
    return token


def refused_token(node_id: str, answer: dict[str, Any], config: ClusterConfig) -> str:
    """The message for a node's 401 answer: who refused, why, and which variable to export."""
    return (f"{node_id} refused the admin token: {answer.get('error')}; export "
            f"{config.admin_token_env} with the token the nodes were started with")


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Cluster file (TOML).")
@click.option("--to", "target", required=True, help="Node id that should lead.")
@click.option("--timeout", type=DurationParam(minimum=0.5), default=30.0,
              show_default=True,
              help="Give up after this long (seconds, or 500ms/30s/5m).")
def failover(config_path: str, target: str, timeout: float) -> None:
    """Move leadership to node TO and wait until it holds the lease.

    The admin token comes from the environment variable named by admin_token_env.
    Works under write load; writes pause for the handover (typically well under a second).
    """
    config = load_config(config_path)
    config.node(target)                                   # ConfigError (USAGE) if unknown
    token = admin_token(config)
    started = time.monotonic()
    deadline = started + timeout
    rows = fetch_status(config)
    reachable = [r for r in rows if r.get("reachable")]
    if not reachable:
        fail(f"no node answered /status{unreachable(rows)}; are the nodes running and is the "
             "http address in the cluster file reachable from here?", Exit.UNREACHABLE)
    before = next((r["id"] for r in rows if r.get("is_leader")), None)
    if before == target:
        click.echo(f"{target} already leads (term {_row(rows, target).get('term')}); "
                   "nothing to do")
        return
    target_row = _row(rows, target)
    if not target_row.get("reachable"):
        fail(f"{target_row.get('error')}; start it (and wait for `hastate status` to show "
             "it ready) before moving leadership to it", Exit.FAILED)
    # Ask the leader first; any other reachable node can drive the transfer too.
    order = sorted(reachable, key=lambda r: (r["id"] != before, r["id"] == target))
    by_id = {n.id: n for n in config.nodes}
    last_error = "no node accepted the request"
    for row in order:
        http = by_id[row["id"]].http
        remaining = deadline - time.monotonic()
        if http is None:   # not reachable then; kept for the type checker
            continue
        if remaining <= 0:
            break
        try:
            code, answer = call(row["id"], http, "/admin/transfer-leadership",
                                body={"to": target}, token=token, timeout=remaining + 1)
        except NodeUnreachableError as exc:
            last_error = str(exc)
            continue
        if code == 401:
            fail(refused_token(row["id"], answer, config), Exit.UNAUTHORIZED)
        if code == 200:
            break
        last_error = f"{row['id']} answered {code}: {answer.get('error')}"
    else:
        fail(f"leadership did not move to {target}: {last_error}{unreachable(rows)}",
             Exit.FAILED)
    # The node that drove the transfer saw the target lead; confirm with the target itself.
    while time.monotonic() < deadline:
        st = node_status(config, target)
        if st.get("is_leader"):
            took = time.monotonic() - started
            click.echo(f"leadership moved {before or '(none)'} -> {target} in {took:.2f}s "
                       f"(term {st.get('term')}, fencing token {st.get('fencing_token')})")
            return
        time.sleep(0.02)
    fail(f"{target} did not report holding the leader lease within "
         f"{timeout:.0f}s; check `hastate status --config {config_path}`", Exit.FAILED)


def _row(rows: list[dict[str, Any]], node_id: str) -> dict[str, Any]:
    return next(r for r in rows if r["id"] == node_id)

