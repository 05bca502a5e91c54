"""The ``hastate`` command line: one module per command, each only parses and calls the API."""

from __future__ import annotations

import logging
import sys

import click

from hastate.cli.certs import certs
from hastate.cli.check_config import check_config
from hastate.cli.demo import demo
from hastate.cli.events import events
from hastate.cli.exit import Exit
from hastate.cli.failover import failover
from hastate.cli.leases import leases
from hastate.cli.members import members
from hastate.cli.node import node
from hastate.cli.restore import restore
from hastate.cli.snapshot import snapshot
from hastate.cli.status import status
from hastate.errors import HAStateError, NodeUnreachableError
from hastate.observability.logs import configure_logging
from hastate.observability.tracing import install_log_filter


@click.group()
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Log level for hastate's own structured logs (to stderr).")
def cli(log_level: str) -> None:
    """hastate: replicated, leader-safe state for trading bots."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    configure_logging()   # HASTATE_LOG_FORMAT=json: one JSON object per hastate line
    install_log_filter()  # trace_id/span_id on records made inside a span


cli.add_command(node)
cli.add_command(status)
cli.add_command(demo)
cli.add_command(failover)
cli.add_command(members)
cli.add_command(check_config)
cli.add_command(snapshot)
cli.add_command(certs)
cli.add_command(restore)
cli.add_command(leases)
cli.add_command(events)


def main() -> None:
    """Console entry point: an error becomes a one-line message and its exit code.

    A node that does not answer exits :attr:`Exit.UNREACHABLE`, any other HAStateError
    (a bad cluster file, an unknown id) :attr:`Exit.USAGE`.
    """
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(Exit.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except NodeUnreachableError as exc:
        click.echo(f"error: {exc}; is it running, and its http address in the cluster file "
                   "reachable from here?", err=True)
        sys.exit(Exit.UNREACHABLE)
    except HAStateError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(Exit.USAGE)
