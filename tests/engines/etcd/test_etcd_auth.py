"""etcd with authentication on: a bot logs in with the user and the password from the
environment variable the cluster file names, and recovers when its token is revoked."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.errors import HAStateError
from hastate.testing import wait_for
from hastate.testing.etcd import EtcdCluster, require_etcd, write_cluster_file

PASSWORD_ENV = "HASTATE_TEST_ETCD_PASSWORD"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd-auth")) as store:
        store.call(0, "/v3/auth/role/add", {"name": "root"})
        store.call(0, "/v3/auth/user/add", {"name": "root", "password": "root-pw"})
        store.call(0, "/v3/auth/user/grant", {"user": "root", "role": "root"})
        store.call(0, "/v3/auth/enable", {})
        yield store


def config(store: EtcdCluster, tmp_path: Path) -> Path:
    path = write_cluster_file(tmp_path / "cluster.toml", store.endpoints, name="secured",
                              ids=("instance-1",))
    path.write_text(path.read_text().replace(
        "[etcd]\n", f'[etcd]\nuser = "root"\npassword_env = "{PASSWORD_ENV}"\n'))
    return path


def test_a_bot_logs_in_and_keeps_working_after_its_token_is_revoked(
        secured: EtcdCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "root-pw")
    with StateManager.from_config(config(secured, tmp_path), "instance-1",
                                  serve_http=False) as sm:
        wait_for(sm.is_leader, timeout=20)
        revision = sm.save_state({"k": 1})
        with sm.watch("k", start_revision=revision) as events:
            assert events.get(timeout=10).value == 1
            sm.engine.client._token = "revoked-token"          # as if it expired
            sm.save_state({"k": 2})
            assert events.get(timeout=10).value == 2
        assert sm.get_state(keys=["k"]) == {"k": 2}


def test_a_wrong_password_is_refused_by_name(secured: EtcdCluster, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    sm = StateManager.from_config(config(secured, tmp_path), "instance-1", serve_http=False)
    with pytest.raises(HAStateError, match="authenticat"):
        sm.start()
    sm.stop()
