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


def write_engine_file(workdir: Path, *, name: str, engine: str, settings: Mapping[str, Any],
                      ids: Sequence[str] = ("instance-1", "instance-2", "instance-3"),
                      http: bool = False) -> Path:
    """Write ``workdir/cluster.toml`` for ``ids`` on ``engine`` with table ``settings``."""
    lines = ["[cluster]", f"name = {_toml(name)}", f"engine = {_toml(engine)}",
             f"admin_token_env = {_toml(ADMIN_TOKEN_ENV)}", "", f"[{engine}]"]
    lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    for node_id, region in zip(ids, REGIONS):
        lines += ["", "[[nodes]]", f"id = {_toml(node_id)}", f"region = {_toml(region)}"]
        if http:
            lines.append(f'http = "127.0.0.1:{free_port()}"')
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
