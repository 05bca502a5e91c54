"""``hastate failover --config F --to ID``: planned leadership transfer, timed.

Posts ``/admin/transfer-leadership`` to the current leader (or, when no leader answers, to
any reachable node: a transfer can be driven from any node), then waits until ID itself
reports holding the leader lease and prints how long that took.

Exit codes (docs/operations.md): 0 ID leads; 1 it did not within --timeout; 2 bad config or
usage (unknown ID, no admin token); 3 no node reachable; 4 the token was refused.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

import click

from hastate.cli.exit import fail
from hastate.cli.params import DurationParam
from hastate.cli.status import fetch_status, node_status, unreachable
from hastate.config import ClusterConfig, load_config

EXIT_NOT_MOVED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNAUTHORIZED = 4


class UsageProblem(click.ClickException):
    """A problem the operator fixes in the config or environment: exit code 2."""

    exit_code = EXIT_USAGE


def admin_token(config: ClusterConfig) -> str:
    """The admin token from the environment variable ``admin_token_env`` names, or exit 2."""
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


def post_admin(http: str, path: str, body: dict[str, Any], token: str,
               timeout: float) -> tuple[int, dict[str, Any]]:
    """POST JSON to a node's admin endpoint; (status code, body). Raises OSError if unreachable."""
    req = urllib.request.Request(
        f"http://{http}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            answer = json.load(exc)
        except ValueError:
            answer = {"error": exc.reason}
        return exc.code, answer



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
    config.node(target)                                   # ConfigError (exit 2) if unknown
    token = admin_token(config)
    started = time.monotonic()
    deadline = started + timeout
    rows = fetch_status(config)
    reachable = [r for r in rows if r.get("reachable")]
    if not reachable:
        fail(f"no node answered /status{unreachable(rows)}; are the nodes running and is the "
             "http address in the cluster file reachable from here?", EXIT_UNREACHABLE)
    before = next((r["id"] for r in rows if r.get("is_leader")), None)
    if before == target:
        click.echo(f"{target} already leads (term {_row(rows, target).get('term')}); "
                   "nothing to do")
        return
    target_row = _row(rows, target)
    if not target_row.get("reachable"):
        fail(f"{target} does not answer /status ({target_row.get('error')}); "
             "start it (and wait for `hastate status` to show it ready) before moving "
             "leadership to it", EXIT_NOT_MOVED)
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
            code, answer = post_admin(http, "/admin/transfer-leadership", {"to": target},
                                      token, timeout=remaining + 1)
        except OSError as exc:
            last_error = f"{row['id']} ({http}): {getattr(exc, 'reason', exc)}"
            continue
        if code == 401:
            fail(f"{row['id']} refused the admin token: {answer.get('error')}; export "
                 f"{config.admin_token_env} with the token the nodes were started with",
                 EXIT_UNAUTHORIZED)
        if code == 200:
            break
        last_error = f"{row['id']} answered {code}: {answer.get('error')}"
    else:
        fail(f"leadership did not move to {target}: {last_error}{unreachable(rows)}",
             EXIT_NOT_MOVED)
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
         f"{timeout:.0f}s; check `hastate status --config {config_path}`", EXIT_NOT_MOVED)


def _row(rows: list[dict[str, Any]], node_id: str) -> dict[str, Any]:
    return next(r for r in rows if r["id"] == node_id)

