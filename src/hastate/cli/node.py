"""``hastate node run``: one node in the foreground, with its HTTP endpoints."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

import click

from hastate.config import load_config
from hastate.manager import StateManager
from hastate.observability import tracing
from hastate.observability.http import NodeHTTPServer

logger = logging.getLogger(__name__)


def serve(config_path: str, node_id: str,
          work: Callable[[StateManager, threading.Event], None] | None = None,
          join: bool = False) -> None:
    """Run a node until SIGTERM/SIGINT; ``work(manager, stop)`` runs alongside (the demo bot)."""
    config = load_config(config_path)
    node_cfg = config.node(node_id)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    shutdown_tracing = tracing.configure_from_env(node_id)  # OTEL_EXPORTER_OTLP_ENDPOINT
    manager = StateManager.from_config(config, node_id, join=join)
    manager.start()
    http = None
    if node_cfg.http:
        http = NodeHTTPServer(manager, node_cfg.http, admin_token=config.admin_token()).start()
    logger.info("node serving", extra={"node": node_id, "raft": node_cfg.raft,
                                       "http": node_cfg.http})
    try:
        if work is not None:
            work(manager, stop)
        while not stop.wait(0.2):
            if manager.node.fatal_error:
                raise click.ClickException(f"node stopped to protect its data: "
                                           f"{manager.node.fatal_error}")
    finally:
        if http is not None:
            http.stop()
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
