"""hastate's log lines as JSON objects for Cloud Logging / ELK, or plain text (the default).

``HASTATE_LOG_FORMAT=json`` (or ``format = "json"`` in the cluster file's ``[logging]``
table; the environment wins) gives the ``hastate`` logger one stderr handler whose every
line is one JSON object: time, level, logger, message, the node's id, region, term and
role, and the fields the call passed in ``extra={...}`` (which win over the node's).
Plain text leaves logging to the application (or to the CLI's ``--log-level``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from hastate.errors import ConfigError

if TYPE_CHECKING:
    from hastate.config import LoggingConfig
    from hastate.engines.contract import Engine


class Logged(Protocol):
    """What the log context reads of the bound node's manager (``StateManager`` has it)."""

    instance_id: str
    region: str
    engine: "Engine"

FORMAT_ENV = "HASTATE_LOG_FORMAT"
ROOT_LOGGER = "hastate"
#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_NODE_FIELDS = ("node", "region", "term", "role")

_node: "weakref.ref[Logged] | None" = None


def bind_node(manager: Logged) -> None:
    """Make ``manager`` the node whose id, region, term and role every line carries."""
    global _node
    _node = weakref.ref(manager)


def node_context() -> dict[str, Any]:
    """The bound node's id, region, term and role ({} when none is bound or it stopped)."""
    manager = _node() if _node is not None else None
    if manager is None:
        return {}
    context: dict[str, Any] = {"node": manager.instance_id, "region": manager.region,
                               "term": None, "role": None}
    try:
        context.update(manager.engine.log_context())
    except Exception:   # not started yet or stopped: the identity is still worth logging
        pass
    return context


class NodeContextFilter(logging.Filter):
    """Adds the node's context to each record, keeping fields the record already has."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in node_context().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, node context, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        for key in _NODE_FIELDS:
            entry.setdefault(key, None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _json_handler(logger: logging.Logger) -> logging.Handler | None:
    return next((h for h in logger.handlers if isinstance(h.formatter, JsonFormatter)), None)


def configure_logging(settings: "LoggingConfig | None" = None, *,
                      stream: Any = None) -> None:
    """Apply ``HASTATE_LOG_FORMAT`` and the ``[logging]`` table to the ``hastate`` logger.

    Idempotent: a second call replaces nothing that is already right.
    """
    fmt = os.environ.get(FORMAT_ENV, "").strip().lower() or \
        (settings.format if settings is not None else None)
    if fmt not in (None, "text", "json"):
        raise ConfigError(f"unknown log format {fmt!r}; use json or text",
                          field=FORMAT_ENV, value=fmt)
    level = settings.level if settings is not None else None
    logger = logging.getLogger(ROOT_LOGGER)
    if level is not None:
        logger.setLevel(level)
    existing = _json_handler(logger)
    if fmt == "json" and existing is None:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(NodeContextFilter())
        logger.addHandler(handler)
        logger.propagate = False
    elif fmt == "text" and existing is not None:
        logger.removeHandler(existing)
        logger.propagate = True
