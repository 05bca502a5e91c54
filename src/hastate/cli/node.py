"""``hastate node run``: one node in the foreground, the same StateManager a bot embeds.

The manager serves the node's HTTP endpoints itself (its ``http`` address in the cluster
file), so this command only adds signal handling and a fatal-error exit.
"""

from __future__ import annotations

import logging
import signal
import threading

import click

from hastate.manager import StateManager
from hastate.observability import tracing

logger = logging.getLogger(__name__)


def serve(config_path: str, node_id: str, join: bool = False) -> None:
    """Run a node until SIGTERM/SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    shutdown_tracing = tracing.configure_from_env(node_id)  # OTEL_EXPORTER_OTLP_ENDPOINT
    manager = StateManager.from_config(config_path, node_id, join=join)
    manager.start()
    logger.info("node serving", extra={"node": node_id, "engine": manager.engine.name,
                                       "http": manager.http_address})
    try:
        while not stop.wait(0.2):
            fatal = manager.engine.fatal_error()
            if fatal:
                raise click.ClickException(f"node stopped to protect its data: {fatal}")
    finally:
        manager.stop()
        if shutdown_tracing is not None:
            shutdown_tracing()  # exports the spans still queued


@click.group()
def node() -> None:
    """Run a cluster node."""


@node.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Cluster file (TOML).")
@click.option("--id", "node_id", required=True, help="This node's id in the cluster file.")
@click.option("--join", is_flag=True, envvar="HASTATE_JOIN",
              help="First start of a node being added to a running cluster: it stays passive "
                   "(never campaigns) until `hastate members add ID` commits it. Ignored once "
                   "the data_dir holds Raft data. Env: HASTATE_JOIN=1.")
def run(config_path: str, node_id: str, join: bool) -> None:
    """Run node ID in the foreground until SIGTERM or Ctrl-C."""
    serve(config_path, node_id, join=join)
