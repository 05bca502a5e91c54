"""Seed an empty data_dir so a node starts from a restored state (disaster recovery).

The node's dump is written as if the log had been compacted at ``index``: PySyncObj loads
it on start, sets its last applied index there and continues the log after it. Every node
of a cluster seeded with the same (index, term) has matching logs, so they elect a leader
and go on from the restored state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pysyncobj.syncobj import _COMMAND_TYPE

from hastate._fsutil import atomic_write
from hastate.consensus.membership import Member
from hastate.consensus.node import DUMP, IDENTITY, JOURNAL
from hastate.errors import ConfigError
from hastate.state.dump import encode_dump

_NO_OP = bytes([_COMMAND_TYPE.NO_OP])


def is_empty(data_dir: Path) -> bool:
    """True when ``data_dir`` holds no Raft journal and no state dump."""
    return not any((data_dir / name).exists() for name in (JOURNAL, DUMP, JOURNAL + ".meta"))


def seed_data_dir(data_dir: Path, *, cluster: str, node_id: str, state_body: dict[str, Any],
                  index: int, term: int, members: list[Member]) -> None:
    """Write node identity and a dump at (``index``, ``term``); refuse a non-empty data_dir."""
    if not is_empty(data_dir):
        raise ConfigError(f"{data_dir} already holds Raft data; restore never overwrites a "
                          "node's data: move it aside (or restore into a new data_dir)",
                          field="data_dir", value=str(data_dir))
    data_dir.mkdir(parents=True, exist_ok=True)
    index = max(index, 2)  # PySyncObj keeps two entries around a dump: (index - 1, index)
    body = {"state": state_body,
            "raft": {"last": [_NO_OP, index, term], "prev": [_NO_OP, index - 1, term],
                     "cluster": [m.to_dict() for m in sorted(members, key=lambda m: m.id)]}}
    _, blob = encode_dump(body, cluster=cluster, index=index, term=term,
                          keys=len(state_body["data"]), extra={"node": node_id, "seeded": True})
    atomic_write(data_dir / DUMP, blob)
    atomic_write(data_dir / IDENTITY, json.dumps({
        "cluster": cluster, "node_id": node_id,
        "bootstrap": [m.to_dict() for m in members]}).encode())
