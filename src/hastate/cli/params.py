"""Option types shared by the commands: durations as the cluster file writes them."""

from __future__ import annotations

from typing import Any

import click

from hastate.durations import parse_duration
from hastate.errors import ConfigError


class DurationParam(click.ParamType):
    """Seconds (``30``, ``0.5``) or ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``."""

    name = "duration"

    def __init__(self, minimum: float = 0.0) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        field = f"--{param.name}" if param is not None and param.name else "duration"
        try:
            return parse_duration(value, field=field, minimum=self.minimum)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
