"""``hastate events read|export|tail|truncate``: an operator's view of the event streams.

They ask a node's ``/v1/events`` endpoints (admin token from the cluster file's
``admin_token_env``) and print one JSON event per line: ``read`` a stream or ``$all``,
``export`` all of ``$all`` (paged) to a file or stdout, ``tail`` ``$all`` live (Server-Sent
Events, resumable with ``--after``); ``truncate`` applies retention to one stream (archived
to the node's snapshot store first unless ``--no-archive``).
"""

from __future__ import annotations

import json
import sys
import urllib.parse
import urllib.request
from typing import Any, Iterator, TextIO

import click

from hastate.admin_client import call
from hastate.cli.exit import Exit, fail
from hastate.cli.failover import admin_token, refused_token
from hastate.cli.params import DurationParam
from hastate.config import ClusterConfig, load_config

#: Events per request while exporting.
EXPORT_PAGE = 1000


def _node(config: ClusterConfig, node_id: str | None) -> tuple[str, str]:
    nodes = [n for n in config.nodes if n.http and (node_id is None or n.id == node_id)]
    if not nodes:
        raise click.UsageError(f"no node {node_id or ''} with an http address in the cluster "
                               "file; pass --node with a node that has one")
    return nodes[0].id, nodes[0].http


def _read(config: ClusterConfig, node_id: str | None, query: dict[str, Any],
          path: str = "/v1/events/read", body: dict[str, Any] | None = None) -> dict[str, Any]:
    node, http = _node(config, node_id)
    token = admin_token(config)
    path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    code, answer = call(node, http, path, token=token, body=body, timeout=120)
    if code in (401, 403):
        fail(refused_token(node, answer, config), Exit.UNAUTHORIZED)
    if code != 200:
        raise click.UsageError(f"{node} answered {code}: {answer.get('error')}")
    return answer


def _print(events: list[dict[str, Any]], out: TextIO) -> None:
    for event in events:
        out.write(json.dumps(event) + "\n")


@click.group()
def events() -> None:
    """Read, export and follow the replicated event streams."""


_config = click.option("--config", "config_path", required=True,
                       type=click.Path(dir_okay=False))
_node_opt = click.option("--node", "node_id", default=None,
                         help="Node to ask (default: the first with an http address).")
_namespace = click.option("--namespace", default=None, help="Event namespace (default: events).")


@events.command()
@_config
@_node_opt
@_namespace
@click.option("--stream", default=None, help="A stream (default: $all).")
@click.option("--from", "start", type=int, default=None,
              help="First version (--stream) or position ($all).")
@click.option("--backwards", is_flag=True, help="Newest first (--stream only).")
@click.option("--limit", type=int, default=100)
def read(config_path: str, node_id: str | None, namespace: str | None, stream: str | None,
         start: int | None, backwards: bool, limit: int) -> None:
    """Print a stream's (or $all's) events, one JSON object per line."""
    config = load_config(config_path)
    query = {"namespace": namespace, "limit": limit}
    if stream:
        query.update(stream=stream, from_version=start, backwards=int(backwards))
    else:
        query.update(from_position=start)
    _print(_read(config, node_id, query)["events"], sys.stdout)


@events.command()
@_config
@_node_opt
@_namespace
@click.option("--output", type=click.File("w"), default="-", help="File (default: stdout).")
def export(config_path: str, node_id: str | None, namespace: str | None, output: TextIO) -> None:
    """Write every event of $all in position order, one JSON object per line."""
    config = load_config(config_path)
    position, head, count = 1, None, 0
    while head is None or position <= head:
        answer = _read(config, node_id, {"namespace": namespace, "from_position": position,
                                         "limit": EXPORT_PAGE})
        head = head if head is not None else answer["head"]
        page = [e for e in answer["events"] if e["position"] <= head]
        _print(page, output)
        count += len(page)
        if not page:
            break
        position = page[-1]["position"] + 1
    click.echo(f"exported {count} events (up to position {head})", err=True)


def _sse(url: str, token: str) -> Iterator[dict[str, Any]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as resp:
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                yield json.loads(line[len("data: "):])


@events.command()
@_config
@_node_opt
@_namespace
@click.option("--after", type=int, default=None,
              help="Start after this position (default: from the current head).")
@click.option("--count", type=int, default=None, help="Stop after this many events.")
def tail(config_path: str, node_id: str | None, namespace: str | None, after: int | None,
         count: int | None) -> None:
    """Follow $all live, one JSON object per line (Ctrl-C to stop)."""
    config = load_config(config_path)
    if after is None:
        after = _read(config, node_id, {"namespace": namespace, "limit": 0})["head"]
    node, http = _node(config, node_id)
    query = urllib.parse.urlencode({k: v for k, v in {"after": after,
                                                      "namespace": namespace}.items() if v})
    seen = 0
    for event in _sse(f"http://{http}/v1/events/all?{query}", admin_token(config)):
        _print([event], sys.stdout)
        sys.stdout.flush()
        seen += 1
        if count is not None and seen >= count:
            return


@events.command()
@_config
@_node_opt
@_namespace
@click.option("--stream", required=True, help="The stream to truncate.")
@click.option("--before", "before_version", type=int, default=None,
              help="Remove the events with versions below this one.")
@click.option("--older-than", "older_than", type=DurationParam(minimum=0), default=None,
              help="Remove the events recorded longer ago than this (seconds, or 30s/5m/1h).")
@click.option("--no-archive", is_flag=True,
              help="Drop the events without archiving them to the snapshot store.")
def truncate(config_path: str, node_id: str | None, namespace: str | None, stream: str,
             before_version: int | None, older_than: float | None, no_archive: bool) -> None:
    """Apply retention to one stream: archive its old events, then remove them."""
    if (before_version is None) == (older_than is None):
        raise click.UsageError("give exactly one of --before and --older-than")
    body: dict[str, Any] = {"stream": stream, "archive": not no_archive}
    body.update({"before_version": before_version} if before_version is not None
                else {"older_than": older_than})
    answer = _read(load_config(config_path), node_id, {"namespace": namespace},
                   "/v1/events/truncate", body)
    click.echo(f"removed {answer['removed']} events of {stream}; it now starts at version "
               f"{answer['first_version']}; segments: {', '.join(answer['segments']) or '-'}")
