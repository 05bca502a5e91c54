"""Durations: "500ms", "30s", "5m", "1h" or seconds, one parser for every field."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hastate.config import parse_config
from hastate.durations import parse_duration
from hastate.errors import ConfigError

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def cluster(**snapshots: object) -> dict:
    return {"cluster": {"name": "c"}, "snapshots": {"store": "file:///tmp/x", **snapshots},
            "nodes": [{"id": "n1", "raft": "127.0.0.1:4001", "data_dir": "/tmp/n1"}]}


@given(st.integers(0, 10**6), st.sampled_from(sorted(UNITS)))
def test_a_whole_number_with_a_unit_is_that_many_units(n: int, unit: str) -> None:
    assert parse_duration(f"{n}{unit}", field="f") == pytest.approx(n * UNITS[unit])


@given(st.floats(0, 1e9, allow_nan=False))
def test_plain_seconds_pass_through(seconds: float) -> None:
    assert parse_duration(seconds, field="f") == seconds


@pytest.mark.parametrize("text, seconds", [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0),
                                           ("1h", 3600.0), ("1.5s", 1.5), (" 2m ", 120.0)])
def test_the_forms_operators_write(text: str, seconds: float) -> None:
    assert parse_duration(text, field="f") == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "5 minutes", "1h30m", "-1s", "s", "", "1d", True,
                                 None, [1], float("nan"), float("inf")])
def test_a_bad_duration_names_the_field_and_the_accepted_forms(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration(bad, field="snapshots.interval", path="/etc/hastate/cluster.toml")
    message = str(err.value)
    assert "snapshots.interval" in message and "/etc/hastate/cluster.toml" in message
    assert '"500ms"' in message and '"5m"' in message
    assert err.value.field == "snapshots.interval"


def test_below_the_minimum_is_refused_with_it() -> None:
    with pytest.raises(ConfigError, match="at least 0.05s"):
        parse_duration("10ms", field="snapshots.ship_interval", minimum=0.05)


def test_cluster_file_intervals_accept_duration_strings() -> None:
    cfg = parse_config(cluster(interval="5m", ship_interval="500ms"))
    assert (cfg.snapshots.interval, cfg.snapshots.ship_interval) == (300.0, 0.5)
    assert parse_config(cluster(interval=60, ship_interval=0.2)).snapshots.interval == 60


@pytest.mark.parametrize("key", ["interval", "ship_interval"])
def test_cluster_file_bad_interval_names_its_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"snapshots.{key}: not a duration.*\"30s\""):
        parse_config(cluster(**{key: "soon"}), path="cluster.toml")


def test_the_production_example_writes_durations_as_strings() -> None:
    from pathlib import Path

    from hastate.config import load_config
    cfg = load_config(Path(__file__).resolve().parents[2] / "cluster" / "three-region.toml")
    assert (cfg.snapshots.interval, cfg.snapshots.ship_interval) == (300.0, 1.0)
    assert (cfg.logging.format, cfg.logging.level) == ("json", "INFO")
