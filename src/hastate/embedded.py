"""How a bot's StateManager is wired from a cluster file and lives inside the bot process.

The seed's ``StateManager(project_id=..., instance_id=..., region=...)`` finds the cluster
file (:func:`hastate.config.locate_config`), checks that the caller names this cluster and
this node's region, and derives every constructor argument from the file: the same
:func:`file_wiring` that :meth:`StateManager.from_config` and ``hastate node run`` use.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Protocol

from hastate.config import ClusterConfig, SnapshotConfig, load_config, locate_config
from hastate.consensus.membership import Member
from hastate.consensus.transport import TransportSecurity
from hastate.errors import ConfigError, NoQuorumError



class Startable(Protocol):
    """What :func:`start_in_bot` needs of a manager (``StateManager`` has it)."""

    instance_id: str
    write_timeout: float

    def start(self) -> object:
        """Start the node."""

    def stop(self) -> None:
        """Stop the node (idempotent)."""

    def wait_ready(self, timeout: float) -> None:
        """Wait for a known leader."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wiring:
    """Everything a node needs to know about its cluster, however it was given."""

    peers: Mapping[str, str]
    region: str
    data_dir: Path
    profile: str
    cluster_name: str
    transport: TransportSecurity
    snapshots: SnapshotConfig | None = None
    members: tuple[Member, ...] = ()
    http: str | None = None          # where to serve the node's endpoints (None = nowhere)
    admin_token: str | None = None   # guards /state and /admin/*; None disables them
    config: ClusterConfig | None = None


def explicit_wiring(instance_id: str, peers: Mapping[str, str], *, region: str | None,
                    data_dir: str | os.PathLike[str] | None, profile: str,
                    cluster_secret: str | None, cluster_name: str,
                    transport: TransportSecurity | None, snapshots: SnapshotConfig | None,
                    members: Iterable[Member], http: str | None,
                    admin_token: str | None) -> Wiring:
    """Wiring from explicit constructor arguments (a peers mapping, no cluster file)."""
    if transport is None:
        transport = TransportSecurity(mode="psk", psk=cluster_secret.encode()) \
            if cluster_secret else TransportSecurity(mode="plaintext")
    data = Path(data_dir) if data_dir is not None else Path("hastate-data") / instance_id
    return Wiring(peers=dict(peers), region=region or "local", data_dir=data, profile=profile,
                  cluster_name=cluster_name, transport=transport, snapshots=snapshots,
                  members=tuple(members), http=http, admin_token=admin_token)


def refuse_mixed(*, from_file: bool, **given: object) -> None:
    """ConfigError when arguments of the other way in were given (none is silently ignored).

    ``given`` maps argument names to values that count as given when not None/False/empty.
    """
    mixed = sorted(name for name, value in given.items() if value not in (None, False, ()))
    if not mixed:
        return
    if from_file:
        raise ConfigError(f"{', '.join(mixed)} come(s) from the cluster file when no peers "
                          "are given; drop them, or pass peers={id: raft address} instead of "
                          "a cluster file", field=mixed[0], value=given[mixed[0]])
    raise ConfigError(f"{', '.join(mixed)} select(s) a cluster file, but peers were given "
                      "too; pass either peers or project_id/config", field=mixed[0],
                      value=given[mixed[0]])


def resolve_config(config: str | os.PathLike[str] | ClusterConfig | None) -> ClusterConfig:
    """``config`` loaded (a path), as given (a ClusterConfig), or found (None)."""
    if isinstance(config, ClusterConfig):
        return config
    return load_config(config if config is not None else locate_config())


def file_wiring(cfg: ClusterConfig, instance_id: str, *, project_id: str | None = None,
                region: str | None = None, admin_token: str | None = None) -> Wiring:
    """Wiring for node ``instance_id`` of ``cfg``.

    ``project_id`` (when given) must be the file's ``[cluster] name`` and ``region`` (when
    given) this node's region: a bot started with the wrong file or the wrong identity
    stops here, before it touches a data directory.
    """
    if project_id is not None and project_id != cfg.name:
        raise ConfigError(f"project_id {project_id!r} does not match [cluster] name "
                          f"{cfg.name!r} of this file; pass project_id={cfg.name!r} or point "
                          "HASTATE_CONFIG at the right cluster file",
                          field="project_id", value=project_id, path=cfg.path)
    node = cfg.node(instance_id)
    if region is not None and region != node.region:
        raise ConfigError(f"region {region!r} does not match region {node.region!r} of node "
                          f"{instance_id} in this file; pass region={node.region!r} or fix "
                          "the node's region in the file", field="region", value=region,
                          path=cfg.path)
    ids = {n.raft: n.id for n in cfg.nodes}
    if cfg.transport == "tls":
        ca, cert, key = cfg.tls.for_node(instance_id)   # type: ignore[union-attr]
        security = TransportSecurity(mode="tls", ca=ca, cert=cert, key=key, node_ids=ids)
    elif cfg.transport == "psk":
        secret = cfg.secret() or ""   # parse_config requires secret_env for "psk"
        security = TransportSecurity(mode="psk", psk=secret.encode(), node_ids=ids)
    else:
        security = TransportSecurity(mode="plaintext", node_ids=ids)
    return Wiring(peers={n.id: n.raft for n in cfg.nodes}, region=node.region,
                  data_dir=node.data_dir, profile=cfg.profile, cluster_name=cfg.name,
                  transport=security, snapshots=cfg.snapshots,
                  members=tuple(cfg.members()) if cfg.engine == "raft" else (),
                  http=node.http,
                  admin_token=admin_token if admin_token is not None else cfg.admin_token(),
                  config=cfg)


def start_in_bot(manager: Startable) -> None:
    """Start ``manager`` now, stop it at interpreter exit, and give the cluster a moment.

    A bot's first write right after construction should not race the first election: wait
    up to ``write_timeout`` for a known leader, and only log when there is none yet (the
    other regions may start later; writes then wait or fail on their own terms).
    """
    manager.start()
    atexit.register(manager.stop)
    try:
        manager.wait_ready(manager.write_timeout)
    except NoQuorumError:
        logger.warning("no leader yet; writes wait for a majority of the nodes",
                       extra={"instance": manager.instance_id})
