"""How every command ends on an error: the message on stderr, a documented exit code."""

from __future__ import annotations

import sys
from typing import NoReturn

import click


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (docs/operations.md)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
