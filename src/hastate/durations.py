"""Durations as operators write them: ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"`` or seconds.

One parser for every interval and timeout hastate takes, from a cluster file or an API
call, so a value means the same everywhere and a bad one gets the same explanation.
"""

from __future__ import annotations

import math
import re
from typing import Any, Union

from hastate.errors import ConfigError

#: What a duration argument accepts: seconds, or a string such as "30s".
Duration = Union[float, str]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)\s*")
#: How a duration may be written (quoted in every error).
ACCEPTED = ('a number of seconds (30, 0.5) or a string with one unit: "500ms", "30s", '
            '"5m", "1h"')


def parse_duration(value: Any, *, field: str, path: str | None = None,
                   minimum: float = 0.0) -> float:
    """Seconds as a float; ConfigError naming ``field`` and the accepted forms otherwise.

    ``minimum`` is inclusive. Booleans, negative, infinite and NaN values are refused.
    """
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.fullmatch(value)
        if match is not None:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None or not math.isfinite(seconds):
        raise ConfigError(f"not a duration (got {value!r}); write {ACCEPTED}",
                          field=field, value=value, path=path)
    if seconds < minimum:
        raise ConfigError(f"must be at least {minimum:g}s (got {value!r})",
                          field=field, value=value, path=path)
    return seconds


def optional_duration(value: Duration | None, *, field: str) -> float | None:
    """:func:`parse_duration` of a timeout argument; None stays None (the default applies)."""
    return None if value is None else parse_duration(value, field=field, minimum=0.001)
