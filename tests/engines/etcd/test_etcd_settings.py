"""The ``[etcd]`` table: every bad field is refused with a ConfigError naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hastate import StateManager
from hastate.engines.etcd.settings import DEFAULT_SESSION_TTL, parse
from hastate.errors import ConfigError

GOOD = {"endpoints": ["http://127.0.0.1:2379"]}


def refused(raw: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(raw, cluster="prod", path="cluster.toml")
    return caught.value


def test_defaults_derive_the_prefix_from_the_cluster_name() -> None:
    settings = parse(GOOD, cluster="prod")
    assert settings.prefix == "/hastate/prod/"
    assert settings.session_ttl == DEFAULT_SESSION_TTL
    assert settings.endpoints == ("http://127.0.0.1:2379",)


@pytest.mark.parametrize("raw, field", [
    ({}, "etcd.endpoints"),
    ({"endpoints": []}, "etcd.endpoints"),
    ({"endpoints": "http://127.0.0.1:2379"}, "etcd.endpoints"),
    ({"endpoints": ["127.0.0.1:2379"]}, "etcd.endpoints"),
    ({"endpoints": ["http://127.0.0.1"]}, "etcd.endpoints"),
    ({**GOOD, "prefix": "no-trailing-slash"}, "etcd.prefix"),
    ({**GOOD, "session_ttl": 1}, "etcd.session_ttl"),
    ({**GOOD, "session_ttl": "2.5s"}, "etcd.session_ttl"),
    ({**GOOD, "session_ttl": "soon"}, "etcd.session_ttl"),
    ({**GOOD, "request_timeout": -1}, "etcd.request_timeout"),
    ({**GOOD, "ca": "/nonexistent/ca.pem"}, "etcd.ca"),
    ({**GOOD, "user": "bot"}, "etcd.password_env"),
    ({**GOOD, "password_env": "X"}, "etcd.user"),
    ({**GOOD, "user": "bot", "password_env": "HASTATE_TEST_UNSET_PASSWORD"},
     "etcd.password_env"),
    ({**GOOD, "endpoint": ["http://127.0.0.1:2379"]}, "etcd.endpoint"),
])
def test_a_bad_field_is_named(raw: dict[str, Any], field: str) -> None:
    error = refused(raw)
    assert error.field == field
    assert field in str(error) and "cluster.toml" in str(error)


def test_cert_without_key_names_the_key(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("pem")
    error = refused({"endpoints": ["https://127.0.0.1:2379"], "cert": str(cert)})
    assert error.field == "etcd.key"


def test_tls_needs_https_endpoints(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    assert refused({**GOOD, "ca": str(ca)}).field == "etcd.endpoints"


def test_the_password_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASTATE_TEST_ETCD_PASSWORD", "s3cret")
    settings = parse({**GOOD, "user": "bot", "password_env": "HASTATE_TEST_ETCD_PASSWORD"},
                     cluster="prod")
    assert (settings.user, settings.password) == ("bot", "s3cret")


def test_a_cluster_file_with_a_bad_etcd_table_fails_before_anything_starts(
        tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text('[cluster]\nname = "prod"\nengine = "etcd"\n\n[etcd]\n'
                      'endpoints = ["http://127.0.0.1:2379"]\nsession_ttl = 1\n\n'
                      '[[nodes]]\nid = "instance-1"\n')
    with pytest.raises(ConfigError) as caught:
        StateManager.from_config(config, "instance-1", serve_http=False)
    assert caught.value.field == "etcd.session_ttl" and str(config) in str(caught.value)


def test_the_example_cluster_file_loads() -> None:
    from hastate import load_config
    example = Path(__file__).resolve().parents[3] / "cluster" / "etcd.toml"
    config = load_config(example)
    settings = parse(config.engine_settings, cluster=config.name, path=config.path)
    assert config.engine == "etcd" and len(config.nodes) == 3
    assert settings.prefix == "/hastate/crypto-bot-prod/" and settings.session_ttl == 5
