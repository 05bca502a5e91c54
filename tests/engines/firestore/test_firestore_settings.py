"""The ``[firestore]`` table: defaults, and a ConfigError naming the field for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from hastate import load_config
from hastate.engines.firestore.settings import parse
from hastate.errors import ConfigError
from hastate.testing.firestore import cluster_file


def test_defaults_follow_the_cluster_name_and_the_lease_ttl() -> None:
    s = parse({"project": "p", "lease_ttl": "10s"}, cluster="bots", path=None)
    assert (s.database, s.prefix, s.lease_ttl, s.renew_interval, s.clock_skew_margin,
            s.change_log_retention) == ("(default)", "bots", 10.0, 2.0, 1.0, 1000)


@pytest.mark.parametrize("table, field", [
    ({}, "firestore.project"),
    ({"project": "p", "colection_prefix": "x"}, "firestore.colection_prefix"),
    ({"project": "p", "database": ""}, "firestore.database"),
    ({"project": "p", "collection_prefix": "a/b"}, "firestore.collection_prefix"),
    ({"project": "p", "lease_ttl": "soon"}, "firestore.lease_ttl"),
    ({"project": "p", "lease_ttl": "2s", "renew_interval": "2s"}, "firestore.renew_interval"),
    ({"project": "p", "change_log_retention": 0}, "firestore.change_log_retention"),
])
def test_each_mistake_names_its_field(table: dict, field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(table, cluster="bots", path="cluster.toml")
    assert refused.value.field == field and "cluster.toml" in str(refused.value)


def test_a_firestore_cluster_file_loads_without_raft_addresses(tmp_path: Path) -> None:
    config = load_config(cluster_file(tmp_path / "c.toml", name="bots", ids=["a", "b"]))
    assert config.engine == "firestore" and config.engine_settings["project"] == "hastate-test"
    assert [(m.id, m.raft) for m in config.members()] == [("a", ""), ("b", "")]


def test_the_example_cluster_file_is_valid() -> None:
    path = Path(__file__).resolve().parents[3] / "cluster" / "firestore.toml"
    config = load_config(path)
    settings = parse(config.engine_settings, cluster=config.name, path=str(path))
    assert (settings.project, settings.prefix, settings.lease_ttl) == \
        ("my-gcp-project", "crypto-bot-prod", 5.0)
    assert [m.region for m in config.members()] == ["asia-northeast1", "us-east1",
                                                   "europe-west1"]
