"""Cluster files for bots on a store engine (etcd, Firestore): no Raft peers, no data dirs.

The store is started elsewhere (``hastate.testing.<store>``); this writes the file every bot
of the cluster reads: ``[cluster]`` with the engine, the engine's own table, and one
``[[nodes]]`` entry per bot with its region (and an http address when asked).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from hastate.testing.cluster import ADMIN_TOKEN_ENV, REGIONS, free_port


def _toml(value: Any) -> str:
    """A TOML literal of a string, number, boolean or list of them (JSON spells them alike)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    raise TypeError(f"cannot write {value!r} into a cluster file table")


def write_engine_file(target: Path, *, name: str, engine: str, settings: Mapping[str, Any],
                      ids: Sequence[str] = ("instance-1", "instance-2", "instance-3"),
                      http: bool | Mapping[str, str] = False,
                      regions: Mapping[str, str] | None = None) -> Path:
    """Write the cluster file of ``ids`` on ``engine`` with table ``settings``; return it.

    ``target``: a ``.toml`` path, or a directory to hold ``cluster.toml``. ``http``: True
    for a free loopback address per node, or node id -> address for some nodes.
    ``regions``: node id -> region (default: the three regions of the demo, in turn).
    """
    lines = ["[cluster]", f"name = {_toml(name)}", f"engine = {_toml(engine)}",
             f"admin_token_env = {_toml(ADMIN_TOKEN_ENV)}", "", f"[{engine}]"]
    lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    for n, node_id in enumerate(ids):
        region = (regions or {}).get(node_id, REGIONS[n % len(REGIONS)])
        lines += ["", "[[nodes]]", f"id = {_toml(node_id)}", f"region = {_toml(region)}"]
        address = http.get(node_id) if isinstance(http, Mapping) else \
            f"127.0.0.1:{free_port()}" if http else None
        if address is not None:
            lines.append(f"http = {_toml(address)}")
    path = target if target.suffix == ".toml" else target / "cluster.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
