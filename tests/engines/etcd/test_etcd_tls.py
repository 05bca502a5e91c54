"""etcd over TLS with client certificates: a bot configured with ca/cert/key works; one
without a client certificate is refused by etcd."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.errors import HAStateError
from hastate.testing import wait_for
from hastate.testing.etcd import (EtcdCluster, TlsFiles, require_etcd, write_cluster_file,
                                  write_tls)


@pytest.fixture(scope="module")
def tls_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdCluster, TlsFiles]]:
    require_etcd()
    workdir = tmp_path_factory.mktemp("etcd-tls")
    files = write_tls(workdir / "pki")
    with EtcdCluster(workdir / "data", tls=files) as store:
        yield store, files


def config(store: EtcdCluster, tmp_path: Path, tls_lines: str) -> Path:
    path = write_cluster_file(tmp_path / "cluster.toml", store.endpoints, name="tls",
                              ids=("instance-1",))
    path.write_text(path.read_text().replace("[etcd]\n", "[etcd]\n" + tls_lines))
    return path


def test_a_bot_with_a_client_certificate_works(tls_store: tuple[EtcdCluster, TlsFiles],
                                                tmp_path: Path) -> None:
    store, files = tls_store
    lines = f'ca = "{files.ca}"\ncert = "{files.client_cert}"\nkey = "{files.client_key}"\n'
    with StateManager.from_config(config(store, tmp_path, lines), "instance-1",
                                  serve_http=False) as sm:
        wait_for(sm.is_leader, timeout=20)
        revision = sm.save_state({"k": "over tls"})
        with sm.watch("k", start_revision=revision) as events:
            assert events.get(timeout=10).value == "over tls"
        assert sm.get_state(keys=["k"]) == {"k": "over tls"}


def test_a_bot_without_a_client_certificate_is_refused(
        tls_store: tuple[EtcdCluster, TlsFiles], tmp_path: Path) -> None:
    store, files = tls_store
    sm = StateManager.from_config(config(store, tmp_path, f'ca = "{files.ca}"\n'),
                                  "instance-1", serve_http=False)
    with pytest.raises(HAStateError, match="no etcd endpoint answered"):
        sm.start()
    sm.stop()
