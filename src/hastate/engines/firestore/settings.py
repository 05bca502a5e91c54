"""The ``[firestore]`` table of a cluster file: which database, which collections, which
lease timings; every bad value is a ConfigError naming its field."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from hastate.durations import parse_duration
from hastate.errors import ConfigError

#: The official client reads the emulator's address from this variable.
EMULATOR_ENV = "FIRESTORE_EMULATOR_HOST"
_KEYS = {"project", "database", "collection_prefix", "lease_ttl", "renew_interval",
         "clock_skew_margin", "change_log_retention"}
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


@dataclass(frozen=True)
class FirestoreSettings:
    """Where the cluster's documents live and how leadership is timed.

    ``lease_ttl``: how long a leader may act after it started its last successful renewal,
    minus ``clock_skew_margin`` (what two instances' monotonic clocks may drift apart over a
    TTL); another instance takes over only after seeing the lease document unchanged for
    ``lease_ttl``. ``change_log_retention``: revisions of changes kept for watchers.
    """

    project: str
    database: str
    prefix: str
    lease_ttl: float
    renew_interval: float
    clock_skew_margin: float
    change_log_retention: int
    emulator_host: str | None


def parse(raw: Mapping[str, Any], *, cluster: str, path: str | None) -> FirestoreSettings:
    """Validate the raw ``[firestore]`` table (defaults: database "(default)", collection
    prefix = the cluster name, lease_ttl 5 s, renew_interval 1 s, margin 0.5 s)."""
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; allowed: {sorted(_KEYS)}",
                          field=f"firestore.{unknown[0]}", value=raw[unknown[0]], path=path)
    project = raw.get("project")
    if not isinstance(project, str) or not project:
        raise ConfigError("the Google Cloud project id is required, e.g. project = "
                          "\"my-trading-project\"", field="firestore.project", value=project,
                          path=path)
    database = raw.get("database", "(default)")
    if not isinstance(database, str) or not database:
        raise ConfigError("must be a database id such as \"(default)\"",
                          field="firestore.database", value=database, path=path)
    prefix = raw.get("collection_prefix", cluster)
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ConfigError("must be 1-100 letters, digits, '_' or '-' (it names collections "
                          "<prefix>_state, <prefix>_meta, ...)",
                          field="firestore.collection_prefix", value=prefix, path=path)
    ttl = parse_duration(raw.get("lease_ttl", 5.0), field="firestore.lease_ttl", path=path,
                         minimum=0.5)
    renew = parse_duration(raw.get("renew_interval", ttl / 5), field="firestore.renew_interval",
                           path=path, minimum=0.01)
    margin = parse_duration(raw.get("clock_skew_margin", ttl / 10),
                            field="firestore.clock_skew_margin", path=path)
    if renew + margin >= ttl:
        raise ConfigError(f"renew_interval ({renew}s) + clock_skew_margin ({margin}s) must be "
                          f"below lease_ttl ({ttl}s), or a leader loses its lease between "
                          "two renewals", field="firestore.renew_interval", value=renew,
                          path=path)
    retention = raw.get("change_log_retention", 1000)
    if isinstance(retention, bool) or not isinstance(retention, int) or retention < 1:
        raise ConfigError("must be an integer >= 1 (revisions kept for watchers)",
                          field="firestore.change_log_retention", value=retention, path=path)
    return FirestoreSettings(project=project, database=database, prefix=prefix,
                             lease_ttl=ttl, renew_interval=renew, clock_skew_margin=margin,
                             change_log_retention=retention,
                             emulator_host=os.environ.get(EMULATOR_ENV) or None)
