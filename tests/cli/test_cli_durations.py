"""Command-line timeouts take the same durations as the cluster file."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from hastate.cli.params import DurationParam


@click.command()
@click.option("--timeout", type=DurationParam(minimum=0.5), default=30.0)
def probe(timeout: float) -> None:
    click.echo(repr(timeout))


@pytest.mark.parametrize("given, seconds", [("45", 45.0), ("2.5", 2.5), ("500ms", 0.5),
                                            ("5m", 300.0), ("1h", 3600.0)])
def test_seconds_and_unit_strings(given: str, seconds: float) -> None:
    out = CliRunner().invoke(probe, ["--timeout", given])
    assert out.exit_code == 0 and float(out.output) == seconds


@pytest.mark.parametrize("given, says", [("soon", "not a duration"),
                                         ("100ms", "at least 0.5s")])
def test_a_bad_duration_names_the_option(given: str, says: str) -> None:
    out = CliRunner().invoke(probe, ["--timeout", given])
    assert out.exit_code == 2 and "--timeout" in out.output and says in out.output


def test_the_commands_use_it() -> None:
    from hastate.cli import cli
    for path in (("status",), ("failover",), ("members", "add")):
        command = cli
        for name in path:
            command = command.commands[name]   # type: ignore[attr-defined]
        option = next(p for p in command.params if p.name == "timeout")
        assert isinstance(option.type, DurationParam), path
