"""``[snapshots] mirrors``: a list of further store URLs, validated like the store itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from hastate.config import parse_config
from hastate.errors import ConfigError


def doc(**snapshots: object) -> dict:
    return {"cluster": {"name": "c"}, "snapshots": snapshots, "nodes": [
        {"id": "n0", "raft": "127.0.0.1:4000", "data_dir": "/tmp/n0"}]}


def test_mirrors_parse_in_order_and_relative_file_urls_resolve(tmp_path: Path) -> None:
    cfg = parse_config(doc(store="gs://b/p", mirrors=["s3://b/p?region=eu-west-1",
                                                       "file://copies/dr"]),
                       base_dir=tmp_path)
    assert cfg.snapshots.mirrors == ("s3://b/p?region=eu-west-1",
                                     f"file://{tmp_path.resolve()}/copies/dr")


def test_no_mirrors_by_default() -> None:
    assert parse_config(doc(store="gs://b/p")).snapshots.mirrors == ()


@pytest.mark.parametrize("snapshots, match", [
    ({"store": "gs://b/p", "mirrors": "s3://b/p"}, r"snapshots.mirrors: must be a list"),
    ({"store": "gs://b/p", "mirrors": ["bucket"]}, r"snapshots.mirrors: must be a list of store"),
    ({"mirrors": ["s3://b/p"]}, r"snapshots.mirrors: mirrors need a primary store"),
    ({"store": "gs://b/p", "mirrors": ["gs://b/p"]}, r"\['gs://b/p'\] listed twice"),
    ({"store": "gs://b/p", "mirrors": ["az://c/p", "az://c/p"]}, r"\['az://c/p'\] listed twice"),
])
def test_bad_mirrors_name_the_field(snapshots: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(doc(**snapshots), path="cluster.toml")
