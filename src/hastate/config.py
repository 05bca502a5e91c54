"""Cluster files: TOML parsed with tomllib into a frozen, validated :class:`ClusterConfig`.

Every error names the file, the key, the bad value and the fix, and is raised at load
time, before any node touches its data directory.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hastate.addresses import (check_transport_mode, is_loopback_address, is_loopback_host,
                               split_address)
from hastate.consensus.backpressure import Limits
from hastate.consensus.membership import Member
from hastate.consensus.profiles import get_profile
from hastate.durations import parse_duration
from hastate.errors import ConfigError
from hastate.state.history import DEFAULT_HISTORY
from hastate.state.watch import DEFAULT_BUFFER

_CLUSTER_KEYS = {"name", "profile", "secret_env", "admin_token_env", "transport",
                 "watch_history", "watch_buffer", "engine"}
_TLS_KEYS = {"ca", "cert", "key"}
_NODE_KEYS = {"id", "region", "raft", "http", "data_dir"}
_SNAPSHOT_KEYS = {"store", "mirrors", "interval", "keep", "ship_interval", "restore_if_empty"}
_LOGGING_KEYS = {"format", "level"}
_LIMIT_KEYS = {"max_uncommitted_entries", "max_uncommitted_bytes", "max_inflight_entries",
               "max_inflight_bytes"}
#: Engines a cluster file may name in ``[cluster] engine``; each but ``raft`` reads its own
#: table (``[etcd]``, ``[firestore]``), validated by the engine (hastate.engines).
ENGINES = ("raft", "etcd", "firestore")
_TOP_KEYS = {"cluster", "nodes", "snapshots", "tls", "logging", "limits", *ENGINES[1:]}
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Where ``StateManager(project_id=..., instance_id=...)`` looks for the cluster file, in order
#: (``$HASTATE_CONFIG`` first, when set).
CONFIG_ENV = "HASTATE_CONFIG"
SEARCH_PATHS = ("hastate.toml", "/etc/hastate/cluster.toml")


@dataclass(frozen=True)
class NodeConfig:
    """One member of the cluster."""

    id: str
    region: str
    raft: str               # "host:port" peers connect to ("" when the engine is not raft)
    http: str | None        # "host:port" for health, status and metrics, or None
    data_dir: Path


def _member(node: NodeConfig) -> Member:
    return Member(node.id, node.raft, node.http, node.region)


@dataclass(frozen=True)
class SnapshotConfig:
    """Where and how often the leader uploads snapshots (disaster recovery)."""

    store: str | None = None          # "file:///dir", "gs://…", "s3://…", "az://…"; None = off
    mirrors: tuple[str, ...] = ()     # further stores the leader also ships to (best effort)
    interval: float = 300.0           # seconds between snapshots (skipped when unchanged)
    keep: int = 24                    # snapshots retained
    ship_interval: float = 1.0        # seconds between shipped log segments
    restore_if_empty: bool = False    # a node with an empty data_dir restores itself


@dataclass(frozen=True)
class LoggingConfig:
    """hastate's own log lines: ``format`` "text" or "json" (None = leave logging alone)."""

    format: str | None = None
    level: str | None = None


@dataclass(frozen=True)
class TLSConfig:
    """PEM paths for mutual TLS between nodes; ``{id}`` in a path is the node id."""

    ca: str
    cert: str
    key: str

    def for_node(self, node_id: str) -> tuple[str, str, str]:
        """(ca, cert, key) paths of ``node_id``."""
        return self.ca, self.cert.replace("{id}", node_id), self.key.replace("{id}", node_id)


@dataclass(frozen=True)
class ClusterConfig:
    """A validated cluster file."""

    name: str
    profile: str
    nodes: tuple[NodeConfig, ...]
    secret_env: str | None = None
    admin_token_env: str | None = None
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    transport: str = "plaintext"   # "tls", "psk" (secret_env) or "plaintext" (loopback only)
    tls: TLSConfig | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    path: str | None = None
    watch_history: int = DEFAULT_HISTORY   # revisions of changes each node keeps for watchers
    watch_buffer: int = DEFAULT_BUFFER     # undelivered events before a watcher is cancelled
    limits: Limits = field(default_factory=Limits)
    engine: str = "raft"                   # one of ENGINES
    #: The engine's own table (``[etcd]`` for engine = "etcd"); {} for raft.
    engine_settings: Mapping[str, Any] = field(default_factory=dict)

    def members(self) -> list[Member]:
        """The file's nodes as membership records (the bootstrap configuration)."""
        return [_member(n) for n in self.nodes]

    def member(self, node_id: str) -> Member:
        """Node ``node_id`` as a membership record; ConfigError naming the ids if unknown."""
        return _member(self.node(node_id))

    def node(self, node_id: str) -> NodeConfig:
        """The node with ``node_id``; ConfigError lists the known ids otherwise."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise ConfigError(f"unknown node id {node_id!r}; this cluster has "
                          f"{[n.id for n in self.nodes]} (check --id)",
                          field="nodes.id", value=node_id, path=self.path)

    @property
    def all_loopback(self) -> bool:
        """True when every raft address is on this machine (development clusters)."""
        return all(is_loopback_address(n.raft) for n in self.nodes)

    def secret(self) -> str | None:
        """The cluster secret from ``secret_env`` (None when unused); ConfigError when missing."""
        if self.secret_env is None or self.transport != "psk":
            return None
        value = os.environ.get(self.secret_env)
        if not value:
            raise ConfigError(f"environment variable {self.secret_env} is empty or not set; "
                              f"export {self.secret_env}=<the cluster secret> on every node",
                              field="cluster.secret_env", value=self.secret_env, path=self.path)
        return value

    def admin_token(self) -> str | None:
        """The bearer token for admin HTTP actions, from ``admin_token_env`` (None = disabled)."""
        return os.environ.get(self.admin_token_env) or None if self.admin_token_env else None


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str, path: str | None) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; allowed keys are {sorted(allowed)}",
                          field=where, value=unknown, path=path)


def _require(table: Mapping[str, Any], key: str, kind: type, where: str, path: str | None) -> Any:
    if key not in table:
        raise ConfigError(f"missing required key {key!r}", field=f"{where}.{key}", path=path)
    value = table[key]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise ConfigError(f"must be a non-empty {kind.__name__} (got {value!r})",
                          field=f"{where}.{key}", value=value, path=path)
    return value


def _address(value: Any, where: str, path: str | None) -> str:
    try:
        split_address(value)
    except ValueError as exc:
        raise ConfigError(f"bad address {value!r}: {exc}; write it as \"host:port\"",
                          field=where, value=value, path=path) from None
    return value


def _number(table: Mapping[str, Any], key: str, default: float, where: str,
            path: str | None, *, minimum: float, integer: bool = False) -> Any:
    value = table.get(key, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"must be {kind} >= {minimum} (got {value!r})",
                          field=f"{where}.{key}", value=value, path=path)
    return value


def _store_url(url: str | None, base: Path) -> str | None:
    """A store URL with a relative ``file://`` path resolved against the cluster file's dir."""
    if url is not None and url.startswith("file://") and not url.startswith("file:///"):
        return "file://" + str((base / url[len("file://"):]).resolve())
    return url


def _mirrors(value: Any, store: str | None, base: Path, path: str | None) -> tuple[str, ...]:
    """Validate ``[snapshots] mirrors``: distinct store URLs, none the primary store."""
    where = "snapshots.mirrors"
    if not isinstance(value, list) or \
            not all(isinstance(u, str) and "://" in u for u in value):
        raise ConfigError(f"must be a list of store URLs like [\"s3://bucket/prefix\", "
                          f"\"az://container/prefix\"] (got {value!r})", field=where,
                          value=value, path=path)
    if value and store is None:
        raise ConfigError("mirrors need a primary store: set [snapshots] store as well",
                          field=where, value=value, path=path)
    urls = tuple(_store_url(u, base) or u for u in value)
    repeated = sorted({u for u in urls if urls.count(u) > 1 or u == store})
    if repeated:
        raise ConfigError(f"{repeated} listed twice (a mirror must differ from the store and "
                          "from every other mirror)", field=where, value=value, path=path)
    return urls


def parse_config(raw: Mapping[str, Any], *, path: str | None = None,
                 base_dir: Path | None = None) -> ClusterConfig:
    """Validate a parsed TOML document; relative data_dirs resolve against ``base_dir``."""
    if not isinstance(raw, Mapping):
        raise ConfigError("the document must be a TOML table", path=path)
    _check_keys(raw, _TOP_KEYS, "(top level)", path)
    cluster = raw.get("cluster")
    if not isinstance(cluster, Mapping):
        raise ConfigError("missing [cluster] table with at least name = \"...\"",
                          field="cluster", path=path)
    _check_keys(cluster, _CLUSTER_KEYS, "cluster", path)
    name = _require(cluster, "name", str, "cluster", path)
    engine = cluster.get("engine", "raft")
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}",
                          field="cluster.engine", value=engine, path=path)
    for other in ENGINES[1:]:
        if other != engine and other in raw:
            raise ConfigError(f"a [{other}] table is given but cluster.engine is {engine!r}; "
                              f"set engine = \"{other}\" or drop the table",
                              field=other, path=path)
    settings = raw.get(engine, {}) if engine != "raft" else {}
    if not isinstance(settings, Mapping):
        raise ConfigError("must be a table", field=engine, path=path)
    raft_engine = engine == "raft"
    profile = cluster.get("profile", "lan")
    try:
        get_profile(profile)          # the one check of a profile name, as the manager's
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), field="cluster.profile", value=profile,
                          path=path) from None
    secret_env = cluster.get("secret_env")
    admin_token_env = cluster.get("admin_token_env")
    for key, value in (("secret_env", secret_env), ("admin_token_env", admin_token_env)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"must be the name of an environment variable (got {value!r})",
                              field=f"cluster.{key}", value=value, path=path)

    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise ConfigError("at least one [[nodes]] entry is required (three for failover)",
                          field="nodes", path=path)
    base = base_dir or Path.cwd()
    nodes: list[NodeConfig] = []
    seen: dict[str, dict[Any, str]] = {"id": {}, "raft": {}, "http": {}}
    for i, node in enumerate(nodes_raw):
        where = f"nodes[{i}]"
        if not isinstance(node, Mapping):
            raise ConfigError("each [[nodes]] entry must be a table", field=where, path=path)
        _check_keys(node, _NODE_KEYS, where, path)
        node_id = _require(node, "id", str, where, path)
        if raft_engine:
            raft = _address(_require(node, "raft", str, where, path), f"{where}.raft", path)
        elif "raft" in node:
            raise ConfigError(f"engine {engine!r} has no Raft peers; drop {where}.raft",
                              field=f"{where}.raft", value=node["raft"], path=path)
        else:
            raft = ""
        http = node.get("http")
        if http is not None:
            http = _address(http, f"{where}.http", path)
        region = node.get("region", "local")
        if not isinstance(region, str):
            raise ConfigError(f"must be a string (got {region!r})", field=f"{where}.region",
                              value=region, path=path)
        data_dir = Path(_require(node, "data_dir", str, where, path) if raft_engine
                        else node.get("data_dir", f"hastate-data/{node_id}"))
        if not data_dir.is_absolute():
            data_dir = base / data_dir
        # A loopback http address belongs to one machine (the raft host): it may repeat
        # across machines, not on one.
        raft_host = split_address(raft)[0] if raft else "127.0.0.1"
        http_key = None if http is None else \
            (raft_host, http) if is_loopback_host(split_address(http)[0]) else http
        for key, value in (("id", node_id), ("raft", raft), ("http", http_key)):
            if not value:
                continue
            if value in seen[key]:
                shown = value[-1] if isinstance(value, tuple) else value
                raise ConfigError(f"duplicate {key} {shown!r} (also used by "
                                  f"{seen[key][value]}); every node needs its own",
                                  field=f"{where}.{key}", value=value, path=path)
            seen[key][value] = where
        nodes.append(NodeConfig(id=node_id, region=region, raft=raft, http=http,
                                data_dir=data_dir))

    snaps = raw.get("snapshots", {})
    if not isinstance(snaps, Mapping):
        raise ConfigError("must be a table", field="snapshots", path=path)
    _check_keys(snaps, _SNAPSHOT_KEYS, "snapshots", path)
    store = snaps.get("store")
    if store is not None and (not isinstance(store, str) or "://" not in store):
        raise ConfigError(f"must be a URL like \"file:///var/lib/hastate/snapshots\" or "
                          f"\"gs://bucket/prefix\" (got {store!r})", field="snapshots.store",
                          value=store, path=path)
    store = _store_url(store, base)
    mirrors = _mirrors(snaps.get("mirrors", []), store, base, path)
    restore_if_empty = snaps.get("restore_if_empty", False)
    if not isinstance(restore_if_empty, bool):
        raise ConfigError(f"must be true or false (got {restore_if_empty!r})",
                          field="snapshots.restore_if_empty", value=restore_if_empty, path=path)
    snapshots = SnapshotConfig(
        store=store, mirrors=mirrors,
        interval=parse_duration(snaps.get("interval", 300.0), field="snapshots.interval",
                                path=path, minimum=0.1),
        keep=_number(snaps, "keep", 24, "snapshots", path, minimum=1, integer=True),
        ship_interval=parse_duration(snaps.get("ship_interval", 1.0),
                                     field="snapshots.ship_interval", path=path, minimum=0.05),
        restore_if_empty=restore_if_empty)

    tls_raw = raw.get("tls")
    tls = None
    if tls_raw is not None:
        if not isinstance(tls_raw, Mapping):
            raise ConfigError("must be a table", field="tls", path=path)
        _check_keys(tls_raw, _TLS_KEYS, "tls", path)
        paths = {k: _require(tls_raw, k, str, "tls", path) for k in sorted(_TLS_KEYS)}
        tls = TLSConfig(**{k: str(base / v) for k, v in paths.items()})
    loopback = all(is_loopback_address(n.raft) for n in nodes) if raft_engine else True
    transport = cluster.get("transport", "plaintext" if loopback else "tls")
    if raft_engine:
        check_transport_mode(transport, [n.raft for n in nodes], field="cluster.transport",
                             path=path)
    elif "transport" in cluster:
        raise ConfigError(f"engine {engine!r} has no Raft transport; secure the connection "
                          f"to the store in the [{engine}] table", field="cluster.transport",
                          value=transport, path=path)
    if transport == "tls" and tls is None:
        raise ConfigError("transport \"tls\" needs a [tls] table with ca, cert and key (PEM "
                          "paths; {id} stands for the node id); create them with `hastate "
                          "certs init --config FILE --out DIR`", field="tls", path=path)
    if transport == "psk" and secret_env is None:
        raise ConfigError("transport \"psk\" needs secret_env = \"HASTATE_CLUSTER_SECRET\" in "
                          "[cluster], exported on every node (64 hex chars: openssl rand -hex "
                          "32)", field="cluster.secret_env", path=path)
    watch_history = _number(cluster, "watch_history", DEFAULT_HISTORY, "cluster", path,
                            minimum=1, integer=True)
    watch_buffer = _number(cluster, "watch_buffer", DEFAULT_BUFFER, "cluster", path,
                           minimum=1, integer=True)
    return ClusterConfig(name=name, profile=profile, nodes=tuple(nodes), secret_env=secret_env,
                         admin_token_env=admin_token_env, snapshots=snapshots,
                         transport=transport, tls=tls, logging=_logging(raw, path), path=path,
                         watch_history=watch_history, watch_buffer=watch_buffer,
                         limits=_limits(raw.get("limits", {}), path), engine=engine,
                         engine_settings=dict(settings))


def _logging(raw: Mapping[str, Any], path: str | None) -> LoggingConfig:
    """The optional [logging] table: format "text"/"json", level DEBUG..ERROR."""
    table = raw.get("logging", {})
    if not isinstance(table, Mapping):
        raise ConfigError("must be a table", field="logging", path=path)
    _check_keys(table, _LOGGING_KEYS, "logging", path)
    fmt, level = table.get("format"), table.get("level")
    if fmt is not None and fmt not in LOG_FORMATS:
        raise ConfigError(f"unknown log format {fmt!r}; choose one of {list(LOG_FORMATS)}",
                          field="logging.format", value=fmt, path=path)
    if level is not None and (not isinstance(level, str) or level.upper() not in LOG_LEVELS):
        raise ConfigError(f"unknown log level {level!r}; choose one of {list(LOG_LEVELS)}",
                          field="logging.level", value=level, path=path)
    return LoggingConfig(format=fmt, level=level.upper() if level else None)


def _limits(table: Any, path: str | None) -> Limits:
    """The ``[limits]`` table: back-pressure bounds (defaults in :class:`Limits`)."""
    if not isinstance(table, Mapping):
        raise ConfigError("must be a table", field="limits", path=path)
    _check_keys(table, _LIMIT_KEYS, "limits", path)
    default = Limits()
    return Limits(
        max_uncommitted_entries=_number(table, "max_uncommitted_entries",
                                        default.max_uncommitted_entries, "limits", path,
                                        minimum=16, integer=True),
        max_uncommitted_bytes=_number(table, "max_uncommitted_bytes",
                                      default.max_uncommitted_bytes, "limits", path,
                                      minimum=65536, integer=True),
        max_inflight_entries=_number(table, "max_inflight_entries",
                                     default.max_inflight_entries, "limits", path,
                                     minimum=1, integer=True),
        max_inflight_bytes=_number(table, "max_inflight_bytes", default.max_inflight_bytes,
                                   "limits", path, minimum=4096, integer=True))


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate a cluster file."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read cluster file: {exc.strerror}", path=str(file)) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(file)) from None
    return parse_config(raw, path=str(file), base_dir=file.resolve().parent)


def locate_config() -> Path:
    """The cluster file an embedded bot uses: ``$HASTATE_CONFIG``, else the first of
    :data:`SEARCH_PATHS` that exists; ConfigError listing the places searched otherwise."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"{CONFIG_ENV}={env} names no readable file; point it at the "
                              "cluster file (e.g. export HASTATE_CONFIG=/etc/hastate/"
                              "cluster.toml)", field=CONFIG_ENV, value=env, path=env)
        return Path(env)
    for candidate in SEARCH_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    searched = [f"${CONFIG_ENV} (not set)", str(Path.cwd() / SEARCH_PATHS[0]),
                *SEARCH_PATHS[1:]]
    raise ConfigError(f"no cluster file found; searched {', '.join(searched)}. Fix: export "
                      f"{CONFIG_ENV}=/path/to/cluster.toml (see cluster/three-region.toml)",
                      field=CONFIG_ENV)
