"""StateManager(project_id=..., instance_id=..., region=...): finding the cluster file and
refusing the wrong one, each with an error that names the field, both values and the file."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hastate import ConfigError, StateManager
from hastate.config import SEARCH_PATHS
from hastate.testing import LocalCluster

PROJECT = "crypto-bot-prod"


@pytest.fixture
def cluster_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalCluster:
    cluster = LocalCluster(tmp_path / "c", 3, name=PROJECT)
    monkeypatch.setenv("HASTATE_CONFIG", str(cluster.config_path))
    monkeypatch.chdir(tmp_path)
    return cluster


def seed(**kwargs: object) -> StateManager:
    args = {"project_id": PROJECT, "instance_id": "instance-1", "region": "asia-northeast1"}
    return StateManager(**{**args, **kwargs})  # type: ignore[arg-type]


def test_wrong_project_id_names_both_names_and_the_file(cluster_file: LocalCluster) -> None:
    with pytest.raises(ConfigError) as err:
        seed(project_id="crypto-bot-staging")
    message = str(err.value)
    assert err.value.field == "project_id"
    assert "'crypto-bot-staging'" in message and f"'{PROJECT}'" in message
    assert str(cluster_file.config_path) in message


def test_wrong_region_names_both_regions_and_the_file(cluster_file: LocalCluster) -> None:
    with pytest.raises(ConfigError) as err:
        seed(region="us-central1")
    message = str(err.value)
    assert err.value.field == "region"
    assert "'us-central1'" in message and "'asia-northeast1'" in message
    assert "instance-1" in message and str(cluster_file.config_path) in message


def test_unknown_instance_names_the_known_ones(cluster_file: LocalCluster) -> None:
    with pytest.raises(ConfigError, match=r"unknown node id 'instance-9'.*instance-1"):
        seed(instance_id="instance-9")


def test_no_cluster_file_lists_the_places_searched_and_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if Path(SEARCH_PATHS[-1]).exists():
        pytest.skip(f"{SEARCH_PATHS[-1]} exists on this machine")
    monkeypatch.delenv("HASTATE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        seed()
    message = str(err.value)
    assert "no cluster file found" in message
    assert "$HASTATE_CONFIG (not set)" in message
    assert str(tmp_path / "hastate.toml") in message and "/etc/hastate/cluster.toml" in message
    assert "export HASTATE_CONFIG=" in message


def test_hastate_config_naming_a_missing_file_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere.toml"
    monkeypatch.setenv("HASTATE_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=rf"HASTATE_CONFIG={missing} names no readable file"):
        seed()


def test_hastate_toml_in_the_working_directory_is_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = LocalCluster(tmp_path / "c", 3, name=PROJECT)
    (tmp_path / "hastate.toml").write_text(cluster.config_path.read_text())
    monkeypatch.delenv("HASTATE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    sm = seed(autostart=False)
    assert sm.config is not None and sm.config.path == "hastate.toml"
    assert sm.http_address == cluster.http["instance-1"]
    assert seed(autostart=False, serve_http=False).http_address is None


def test_a_taken_http_port_is_a_config_error_naming_node_and_address(
        cluster_file: LocalCluster) -> None:
    host, port = cluster_file.http["instance-1"].rsplit(":", 1)
    with socket.socket() as holder:
        holder.bind((host, int(port)))
        holder.listen()
        with pytest.raises(ConfigError) as err:
            seed()
        message = str(err.value)
        assert "node instance-1" in message and cluster_file.http["instance-1"] in message
        assert "already in use" in message and err.value.field == "nodes.http"
    # nothing was left running: the same node starts once the port is free
    sm = StateManager.from_config(cluster_file.config_path, "instance-1")
    try:
        sm.start()
        assert sm.http_server is not None and sm.node.running
    finally:
        sm.stop()
        sm.stop()           # idempotent


@pytest.mark.parametrize("call, field", [
    (lambda sm: sm.configure_failover(health_check_interval="soon"), "health_check_interval"),
    (lambda sm: sm.configure_failover(failover_timeout="1 minute"), "failover_timeout"),
])
def test_a_bad_duration_names_the_field(cluster_file: LocalCluster, call, field: str) -> None:
    sm = seed(autostart=False)
    with pytest.raises(ConfigError) as err:
        call(sm)
    assert err.value.field == field and '"30s"' in str(err.value)


def test_bad_write_timeout_names_the_field(cluster_file: LocalCluster) -> None:
    with pytest.raises(ConfigError, match=r"write_timeout: not a duration"):
        seed(write_timeout="ten seconds", autostart=False)
    assert seed(write_timeout="2500ms", autostart=False).write_timeout == 2.5


def test_arguments_of_the_other_way_in_are_refused_not_ignored(
        cluster_file: LocalCluster, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data_dir come\(s\) from the cluster file"):
        seed(data_dir=tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"project_id select\(s\) a cluster file"):
        StateManager("n1", {"n1": "127.0.0.1:1"}, project_id=PROJECT)
