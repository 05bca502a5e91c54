"""The Firestore engine: ``[cluster] engine = "firestore"`` with a ``[firestore]`` table
(project, database, collection_prefix, lease timings); see docs/engine-firestore.md.

google-cloud-firestore is the optional extra ``hastate[firestore]``, imported only here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hastate.errors import ConfigError

if TYPE_CHECKING:
    from hastate.config import ClusterConfig
    from hastate.engines import Options
    from hastate.engines.firestore.engine import FirestoreEngine


def open_engine(config: "ClusterConfig", instance_id: str,
                options: "Options") -> "FirestoreEngine":
    """The engine of ``instance_id`` on the cluster file's Firestore database."""
    from hastate.engines.firestore.settings import parse
    settings = parse(config.engine_settings, cluster=config.name, path=config.path)
    try:
        from hastate.engines.firestore.engine import FirestoreEngine
    except ImportError as exc:
        raise ConfigError(f"the firestore engine needs google-cloud-firestore ({exc}); "
                          "pip install 'hastate[firestore]'", field="cluster.engine",
                          value="firestore", path=config.path) from None
    return FirestoreEngine(settings, instance_id, config.members(), options)
