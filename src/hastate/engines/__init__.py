"""Engines: the replicated stores a :class:`~hastate.StateManager` can run on.

:mod:`hastate.engines.contract` says what every engine promises; :mod:`hastate.engines.raft`
is the embedded Raft cluster (the default). Every other engine is a package named as in
``[cluster] engine`` whose ``open_engine(config, instance_id, options)`` builds it from the
cluster file (its own table is ``config.engine_settings``), imported only when chosen, so
its client library stays an optional extra.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hastate.writes import Observer

if TYPE_CHECKING:
    from hastate.config import ClusterConfig
    from hastate.engines.contract import Engine


@dataclass(frozen=True)
class Options:
    """What every engine gets from the manager besides the cluster file."""

    write_timeout: float
    watch_history: int
    watch_buffer: int
    observers: list[Observer]      # observe(op, seconds, outcome) per finished write


def open_engine(config: "ClusterConfig", instance_id: str, options: Options) -> "Engine":
    """The engine ``config.engine`` names (not ``raft``: the manager wires that one itself)."""
    module = importlib.import_module(f"hastate.engines.{config.engine}")
    return module.open_engine(config, instance_id, options)
