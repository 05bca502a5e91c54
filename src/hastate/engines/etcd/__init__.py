"""The etcd engine: ``[cluster] engine = "etcd"`` runs the StateManager API on an existing
etcd v3 cluster (see docs/engine-etcd.md). Needs the ``hastate[etcd]`` extra (urllib3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hastate.engines import Options
from hastate.engines.etcd.settings import parse

if TYPE_CHECKING:
    from hastate.config import ClusterConfig
    from hastate.engines.etcd.engine import EtcdEngine


def open_engine(config: "ClusterConfig", instance_id: str, options: Options) -> "EtcdEngine":
    """An :class:`EtcdEngine` for ``instance_id`` from the cluster file's ``[etcd]`` table.

    :raises ConfigError: a bad ``[etcd]`` field (named), or an unknown instance id.
    """
    from hastate.engines.etcd.engine import EtcdEngine
    settings = parse(config.engine_settings, cluster=config.name, path=config.path)
    config.node(instance_id)
    return EtcdEngine(settings, instance_id, config.members(), options)
