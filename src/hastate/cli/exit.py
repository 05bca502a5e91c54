"""Every exit code of the ``hastate`` command, one meaning each (docs/operations.md).

A command that ends on an error prints ``error: message`` to stderr through :func:`fail`
with one of these codes; the message says what to do.
"""

from __future__ import annotations

import enum
import sys
from typing import NoReturn

import click


@enum.unique
class Exit(enum.IntEnum):
    """The exit codes; scripts and health checks rely on them."""

    #: Done: the action completed, the cluster is healthy, the file is valid.
    OK = 0
    #: Not done: no leader, not completed within ``--timeout``, verification failed,
    #: ``--strict`` warnings, or a node stopped itself to protect its data.
    FAILED = 1
    #: Bad cluster file, arguments or environment (e.g. the admin token not exported).
    USAGE = 2
    #: ``status``/``members``: a leader, but some voter is unreachable, not ready or unhealthy.
    DEGRADED = 3
    #: A node refused the admin token.
    UNAUTHORIZED = 4
    #: The leader refused the change (would lose quorum, another change in flight, ...).
    REFUSED = 5
    #: A node that must answer did not (not running, or its http address not reachable).
    UNREACHABLE = 6
    #: No snapshot matches (``leases revoke``: the lease had already ended).
    NOT_FOUND = 7
    #: The snapshot store could not be read (missing bucket, no permission, unreachable).
    STORE_UNAVAILABLE = 8
    #: Interrupted with Ctrl-C.
    INTERRUPTED = 130


def fail(message: str, code: Exit) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(int(code))
