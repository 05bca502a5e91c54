"""The cluster file's [limits] table: defaults, values, and errors naming the field."""

from __future__ import annotations

import pytest

from hastate.config import parse_config
from hastate.consensus.backpressure import Limits
from hastate.errors import ConfigError


def doc(**limits: object) -> dict:
    raw = {"cluster": {"name": "c"}, "nodes": [
        {"id": f"n{i}", "raft": f"127.0.0.1:{4000 + i}", "data_dir": f"/tmp/n{i}"}
        for i in range(3)]}
    if limits:
        raw["limits"] = limits
    return raw


def test_defaults_apply_without_a_limits_table() -> None:
    assert parse_config(doc()).limits == Limits()


def test_values_are_read() -> None:
    cfg = parse_config(doc(max_uncommitted_entries=100, max_uncommitted_bytes=100_000,
                           max_inflight_entries=32, max_inflight_bytes=8192))
    assert cfg.limits == Limits(100, 100_000, 32, 8192)


@pytest.mark.parametrize("key,value", [("max_uncommitted_entries", 0),
                                       ("max_uncommitted_entries", "4096"),
                                       ("max_uncommitted_bytes", 1.5),
                                       ("max_uncommitted_bytes", 10),
                                       ("max_inflight_entries", 0),
                                       ("max_inflight_entries", True),
                                       ("max_inflight_bytes", 100)])
def test_bad_values_name_the_field(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc(**{key: value}), path="c.toml")
    assert err.value.field == f"limits.{key}" and "c.toml" in str(err.value)


def test_unknown_keys_and_non_tables_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc(max_queue=3))
    assert err.value.field == "limits" and "max_queue" in str(err.value)
    raw = doc()
    raw["limits"] = 5
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.field == "limits"
