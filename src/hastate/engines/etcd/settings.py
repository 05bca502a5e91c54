"""The cluster file's ``[etcd]`` table, validated field by field.

Example::

    [cluster]
    name = "crypto-bot-prod"
    engine = "etcd"

    [etcd]
    endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"]
    prefix = "/hastate/crypto-bot-prod/"      # default: /hastate/<cluster name>/
    session_ttl = "5s"                        # leader key lease; default 5 s
    request_timeout = "3s"
    discover_members = true                   # false: only the endpoints above (a proxy, an LB)
    ca = "/etc/hastate/etcd-ca.pem"           # TLS (https endpoints); cert + key: client auth
    cert = "/etc/hastate/etcd-client.pem"
    key = "/etc/hastate/etcd-client-key.pem"
    user = "hastate"                          # etcd auth; the password comes from the env
    password_env = "HASTATE_ETCD_PASSWORD"
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from hastate.durations import parse_duration
from hastate.errors import ConfigError

#: Default TTL of each instance's session lease (the leader key lives on it). A third of the
#: default failover_timeout (15 s): a dead leader's key is gone well before failover would
#: give up, and three keep-alives fit in one TTL.
DEFAULT_SESSION_TTL = 5.0
#: etcd grants leases in whole seconds and refuses less than about 2 s on default timings.
MIN_SESSION_TTL = 2.0
DEFAULT_REQUEST_TIMEOUT = 3.0
_KNOWN = {"discover_members", "endpoints", "prefix", "session_ttl", "request_timeout", "ca",
          "cert", "key", "user", "password_env"}


@dataclass(frozen=True)
class EtcdSettings:
    """A validated ``[etcd]`` table."""

    endpoints: tuple[str, ...]
    prefix: str
    session_ttl: float = DEFAULT_SESSION_TTL
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None
    discover_members: bool = True


def _path(raw: Mapping[str, Any], name: str, path: str | None) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError("must be the path of a PEM file", field=f"etcd.{name}", value=value,
                          path=path)
    if not os.path.isfile(value):
        raise ConfigError(f"no such file {value!r}; give the path of a PEM file",
                          field=f"etcd.{name}", value=value, path=path)
    return value


def _endpoints(raw: Mapping[str, Any], path: str | None) -> tuple[str, ...]:
    value = raw.get("endpoints")
    if not isinstance(value, list) or not value:
        raise ConfigError('must be a non-empty list of URLs, e.g. ["http://10.0.0.1:2379"]',
                          field="etcd.endpoints", value=value, path=path)
    out = []
    for url in value:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.port is None or parts.path not in ("", "/"):
            raise ConfigError(f"{url!r} is not an etcd client URL; write http(s)://host:port",
                              field="etcd.endpoints", value=url, path=path)
        out.append(f"{parts.scheme}://{parts.netloc}")
    return tuple(out)


def parse(raw: Mapping[str, Any], *, cluster: str, path: str | None = None) -> EtcdSettings:
    """An :class:`EtcdSettings` from the raw ``[etcd]`` table of cluster ``cluster``.

    :raises ConfigError: naming the field (``etcd.<name>``), the value and the fix.
    """
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; known: {sorted(_KNOWN)}",
                          field=f"etcd.{unknown[0]}", value=raw[unknown[0]], path=path)
    endpoints = _endpoints(raw, path)
    prefix = raw.get("prefix", f"/hastate/{cluster}/")
    if not isinstance(prefix, str) or not prefix.endswith("/") or len(prefix) < 2:
        raise ConfigError('must be a key prefix ending in "/", e.g. "/hastate/prod/"',
                          field="etcd.prefix", value=prefix, path=path)
    session_ttl = parse_duration(raw.get("session_ttl", DEFAULT_SESSION_TTL),
                                 field="etcd.session_ttl", path=path)
    if session_ttl < MIN_SESSION_TTL or session_ttl != int(session_ttl):
        raise ConfigError(f"must be a whole number of seconds >= {MIN_SESSION_TTL:.0f} "
                          "(etcd grants leases in seconds)", field="etcd.session_ttl",
                          value=raw.get("session_ttl"), path=path)
    request_timeout = parse_duration(raw.get("request_timeout", DEFAULT_REQUEST_TIMEOUT),
                                     field="etcd.request_timeout", path=path, minimum=0.05)
    ca, cert, key = (_path(raw, name, path) for name in ("ca", "cert", "key"))
    if (cert is None) != (key is None):
        missing = "key" if key is None else "cert"
        raise ConfigError("cert and key go together (TLS client authentication)",
                          field=f"etcd.{missing}", value=None, path=path)
    if (ca or cert) and not all(e.startswith("https://") for e in endpoints):
        raise ConfigError("TLS settings need https:// endpoints", field="etcd.endpoints",
                          value=list(endpoints), path=path)
    user = raw.get("user")
    password_env = raw.get("password_env")
    if user is not None and (not isinstance(user, str) or not user):
        raise ConfigError("must be the etcd user name", field="etcd.user", value=user, path=path)
    if (user is None) != (password_env is None):
        field = "etcd.password_env" if password_env is None else "etcd.user"
        raise ConfigError("user and password_env go together (etcd authentication)",
                          field=field, value=None, path=path)
    password = None
    if password_env is not None:
        if not isinstance(password_env, str) or not password_env:
            raise ConfigError("must name an environment variable", field="etcd.password_env",
                              value=password_env, path=path)
        password = os.environ.get(password_env)
        if password is None:
            raise ConfigError(f"environment variable {password_env} is not set; export the "
                              "etcd password in it", field="etcd.password_env",
                              value=password_env, path=path)
    discover = raw.get("discover_members", True)
    if not isinstance(discover, bool):
        raise ConfigError("must be true or false", field="etcd.discover_members",
                          value=discover, path=path)
    return EtcdSettings(endpoints=endpoints, prefix=prefix, session_ttl=session_ttl,
                        request_timeout=request_timeout, ca=ca, cert=cert, key=key, user=user,
                        password=password, discover_members=discover)
