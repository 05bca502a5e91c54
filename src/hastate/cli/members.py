"""``hastate members``: list the voters; add or remove one, one change at a time.

The configuration lives in the Raft log (PySyncObj's dynamic membership with hastate's
msgpack commands), so the list comes from the leader's ``/status``; the cluster file says how
to reach each node. A node is added in three steps: add its ``[[nodes]]`` entry to the cluster
file, start it with ``hastate node run --join``, then ``hastate members add ID``. The leader
refuses a change that would leave fewer reachable members than a majority of the new
configuration, and a second change while one is in flight.

Exit codes (:class:`~hastate.cli.exit.Exit`): list as ``hastate status``; add/remove: OK
done, FAILED not done in time or no leader, USAGE bad config, UNREACHABLE a node that must
answer did not, UNAUTHORIZED admin token refused, REFUSED by the leader (the message says
why).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import click

from hastate.admin_client import call
from hastate.cli.exit import Exit, fail
from hastate.cli.failover import admin_token, refused_token
from hastate.cli.params import DurationParam
from hastate.cli.status import classify, fetch_status, node_status, unreachable
from hastate.config import ClusterConfig, NodeConfig, load_config
from hastate.errors import NodeUnreachableError

_COLUMNS = ("id", "region", "raft", "http", "voter", "in_file", "reachable", "role", "healthy",
            "ready", "connected", "lag", "last_contact")



def _leader(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("is_leader")), None)


def _view(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The configuration as the leader (else the reachable node in the highest term) sees it."""
    leader = _leader(rows)
    reachable = [r for r in rows if r.get("reachable") and r.get("members") is not None]
    source = leader or max(reachable, key=lambda r: r.get("term", 0), default=None)
    return None if source is None else source["members"]


def _with_members(config: ClusterConfig, members: list[dict[str, Any]]) -> ClusterConfig:
    """The cluster file plus the members it does not list (so their /status is asked too)."""
    known = {n.id for n in config.nodes}
    extra = tuple(NodeConfig(m["id"], m.get("region") or "-", m["raft"], m.get("http"), Path())
                  for m in members if m["id"] not in known)
    return dataclasses.replace(config, nodes=config.nodes + extra)


def member_rows(config: ClusterConfig) -> tuple[list[dict[str, Any]], int, str]:
    """One row per member or file node: its place in the configuration and its /status."""
    in_file = {n.id for n in config.nodes}
    rows = fetch_status(config)
    view = _view(rows)
    if view is not None and any(m["id"] not in in_file for m in view):
        config = _with_members(config, view)
        rows = fetch_status(config)
    voters = None if view is None else {m["id"] for m in view}
    leader = _leader(rows)
    peers = (leader or {}).get("peers", {})
    out = []
    for node, row in zip(config.nodes, rows):
        out.append({
            "id": node.id, "region": node.region, "raft": node.raft, "http": node.http,
            "voter": None if voters is None else node.id in voters,
            "in_file": node.id in in_file,
            "reachable": row.get("reachable", False),
            "role": row.get("role") if row.get("reachable") else "down",
            "healthy": row.get("healthy"), "ready": row.get("ready"),
            "connected": True if row is leader else peers.get(node.id, {}).get("connected"),
            "lag": row.get("lag"), "last_contact": row.get("last_contact"),
            "error": row.get("error"),
        })
    code, verdict = classify(rows)
    if voters is not None and not voters <= in_file:
        verdict += ("; members missing from the cluster file: "
                    f"{', '.join(sorted(voters - in_file))} (add their [[nodes]] entries)")
    return out, code, verdict


@click.group(invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Cluster file (TOML).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def members(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
    """List the voters (from the leader) and the cluster file's nodes, with their state."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config_path
        return
    if not config_path:
        raise click.UsageError("--config is required")
    rows, code, verdict = member_rows(load_config(config_path))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        table = [list(_COLUMNS)] + [["-" if r.get(c) is None else str(r.get(c))
                                     for c in _COLUMNS] for r in rows]
        widths = [max(len(t[i]) for t in table) for i in range(len(_COLUMNS))]
        click.echo("\n".join("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip()
                             for t in table))
        click.echo(verdict, err=code != 0)
    raise SystemExit(int(code))


_change_options = [
    click.argument("node_id", metavar="ID"),
    click.option("--config", "config_path", type=click.Path(dir_okay=False),
                 help="Cluster file (TOML)."),
    click.option("--timeout", type=DurationParam(minimum=1.0), default=60.0,
                 show_default=True, help="Give up after this long (seconds, or 30s/5m)."),
]


def _change_command(fn: Any) -> Any:
    for option in reversed(_change_options):
        fn = option(fn)
    return click.pass_context(fn)


def _config(ctx: click.Context, config_path: str | None) -> ClusterConfig:
    path = config_path or ctx.obj
    if not path:
        raise click.UsageError("--config is required")
    return load_config(path)


def _http_of(config: ClusterConfig, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Node id -> HTTP address, from the file and the members' own records."""
    http = {m["id"]: m["http"] for m in _view(rows) or [] if m.get("http")}
    http.update({n.id: n.http for n in config.nodes if n.http})
    return http


def _post_to_leader(config: ClusterConfig, body: dict[str, Any], token: str,
                    deadline: float) -> dict[str, Any]:
    """POST /admin/members to the leader, following 409 answers to the new leader."""
    last = "no leader answered"
    while time.monotonic() < deadline:
        rows = fetch_status(config)
        leader = _leader(rows)
        http = _http_of(config, rows).get(leader["id"]) if leader else None
        if http is None:
            time.sleep(0.2)
            continue
        try:
            code, answer = call(leader["id"], http, "/admin/members", body=body, token=token,
                                timeout=max(1.0, deadline - time.monotonic()))
        except NodeUnreachableError as exc:
            last = str(exc)
            time.sleep(0.2)
            continue
        if code == 200:
            return answer
        if code == 401:
            fail(refused_token(leader["id"], answer, config), Exit.UNAUTHORIZED)
        if code == 422:
            fail(str(answer.get("error")), Exit.REFUSED)
        if code == 400:
            fail(str(answer.get("error")), Exit.USAGE)
        if code == 504:
            fail(f"{answer.get('error')}; run `hastate members --config "
                 f"{config.path}` to see whether it took effect", Exit.FAILED)
        last = f"{leader['id']} answered {code}: {answer.get('error')}"
        time.sleep(0.2)
    fail(f"membership change not made: {last}{unreachable(fetch_status(config))}",
         Exit.FAILED)


@members.command("add")
@_change_command
def add(ctx: click.Context, node_id: str, config_path: str | None, timeout: float) -> None:
    """Add node ID (from the cluster file, already running with --join) as a voter.

    Waits until the change is committed and ID has caught up, and prints how long each took.
    """
    config = _config(ctx, config_path)
    member = config.member(node_id)
    token = admin_token(config)
    started = time.monotonic()
    deadline = started + timeout
    own = node_status(config, node_id)
    if not own.get("reachable"):
        fail(f"{own.get('error')}; start it first: hastate node run --config {config.path} "
             f"--id {node_id} --join", Exit.UNREACHABLE)
    answer = _post_to_leader(config, {"op": "add", "member": member.to_dict()}, token, deadline)
    index = answer["commit_index"]
    committed = time.monotonic() - started
    click.echo(f"{node_id} added at commit index {index} in {committed:.2f}s; "
               f"members: {', '.join(m['id'] for m in answer['members'])}")
    while time.monotonic() < deadline:
        st = node_status(config, node_id)
        if st.get("member") and st.get("applied_index", 0) >= index:
            click.echo(f"{node_id} caught up (applied index {st['applied_index']}) "
                       f"{time.monotonic() - started:.2f}s after the request")
            return
        time.sleep(0.1)
    fail(f"{node_id} is a member but has not caught up to index {index} "
         f"within {timeout:.0f}s; watch `hastate status --config {config.path}`", Exit.FAILED)


@members.command("remove")
@_change_command
def remove(ctx: click.Context, node_id: str, config_path: str | None, timeout: float) -> None:
    """Remove member ID; if it leads, leadership moves to another member first.

    Afterwards stop ID's process and delete its [[nodes]] entry on every host.
    """
    config = _config(ctx, config_path)
    token = admin_token(config)
    started = time.monotonic()
    deadline = started + timeout
    rows = fetch_status(config)
    view = _view(rows)
    if view is not None and node_id not in {m["id"] for m in view}:
        fail(f"{node_id!r} is not a member; members: "
             f"{sorted(m['id'] for m in view)}", Exit.REFUSED)
    leader = _leader(rows)
    if leader is not None and leader["id"] == node_id:
        _hand_over(config, leader, token, deadline)
    answer = _post_to_leader(config, {"op": "remove", "id": node_id}, token, deadline)
    click.echo(f"{node_id} removed at commit index {answer['commit_index']} in "
               f"{time.monotonic() - started:.2f}s; members: "
               f"{', '.join(m['id'] for m in answer['members'])}\n"
               f"now stop {node_id}'s process and delete its [[nodes]] entry from the cluster "
               "file on every host")


def _hand_over(config: ClusterConfig, leader: dict[str, Any], token: str,
               deadline: float) -> None:
    """Move leadership from the member about to be removed to its most caught-up peer."""
    peers = [(p.get("lag") if p.get("lag") is not None else float("inf"), pid)
             for pid, p in leader.get("peers", {}).items() if p.get("connected")]
    if not peers:
        fail(f"{leader['id']} leads and no other member is connected to it: "
             "cannot move leadership before removing it", Exit.REFUSED)
    target = min(peers)[1]
    http = _http_of(config, [leader])[leader["id"]]
    code, answer = call(leader["id"], http, "/admin/transfer-leadership", body={"to": target},
                        token=token, timeout=max(1.0, deadline - time.monotonic()))
    if code == 401:
        fail(refused_token(leader["id"], answer, config), Exit.UNAUTHORIZED)
    if code != 200:
        fail(f"could not move leadership off {leader['id']} before removing it:"
             f" {answer.get('error')}", Exit.FAILED)
    click.echo(f"leadership moved {leader['id']} -> {target} in {answer['seconds']:.2f}s")
