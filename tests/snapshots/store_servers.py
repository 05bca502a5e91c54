"""Real S3 and Azure Blob emulators for the store tests, each its own process on loopback.

Imported by this directory's conftest (fixtures) and tests (to tamper with objects).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hastate.snapshots.store import SnapshotStore
from hastate.snapshots.stores import open_store
from hastate.testing import free_port

#: Short client retry and timeouts so a dead emulator fails a call in about a second.
GCS_OPTIONS = {"retry_deadline": 1.0, "timeout": (0.5, 5.0)}
S3_OPTIONS = {"max_attempts": 2, "timeout": (0.5, 5.0)}
AZURE_OPTIONS = {"retries": 1, "timeout": (0.5, 5.0)}
READY_TIMEOUT = 30.0
_REPO = Path(__file__).resolve().parents[2]
#: How .ci/run installs the npm servers (Azurite; s3rver, an S3 server without conditional
#: writes, as the negative control of the S3 store's check for them).
NPM_INSTALL = "npm install --prefix .ci/node azurite@3.35.0 s3rver@3.7.1"
#: Azurite's fixed development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")


def _wait_listening(proc: subprocess.Popen[bytes], port: int, what: str, log: Path) -> None:
    """Wait until ``proc`` accepts TCP connections on ``port``; fail with its log if it died."""
    deadline = time.monotonic() + READY_TIMEOUT
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


class Environ:
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
        self.port = free_port()
        self.log_path = log_path
        self._client = None
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
        """A raw boto3 client (made once), for setting up buckets and tampering with objects."""
        if self._client is None:
            import boto3
            self._client = boto3.client("s3", endpoint_url=self.endpoint,
                                        region_name="us-east-1")
        return self._client

    def create_bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stored(self, bucket: str, key: str) -> tuple[dict[str, str], str]:
        """The object's metadata and ETag as the server keeps them."""
        head = self.client().head_object(Bucket=bucket, Key=key)
        return head["Metadata"], head["ETag"]

    def overwrite(self, bucket: str, key: str, data: bytes) -> None:
        """Replace the object's bytes behind the store's back, keeping its metadata."""
        self.client().put_object(Bucket=bucket, Key=key, Body=data,
                                 Metadata=self.stored(bucket, key)[0])

    def stop(self) -> None:
        _stop(self._proc)


def npm_binary(name: str, env_var: str) -> str | None:
    """An npm server's binary: ``$env_var``, the .ci/node install, or ``name`` on PATH."""
    for candidate in (os.environ.get(env_var),
                      str(_REPO / ".ci" / "node" / "node_modules" / ".bin" / name),
                      shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class NpmServer:
    """An npm-installed emulator as its own process on a loopback port, data in a temp dir.

    A subclass names the tool, its binary, the variable that may point at it, and its
    arguments.
    """

    tool = ""
    binary = ""
    env_var = ""

    def __init__(self, root: Path) -> None:
        binary = npm_binary(self.binary, self.env_var)
        if binary is None:
            pytest.skip(f"missing tool: {self.tool} (or {self.env_var} naming its {self.binary} "
                        f"binary); enable with: {NPM_INSTALL}")
        self.port = free_port()
        self.log_path = root / f"{self.binary}.log"
        (root / "data").mkdir()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen([binary, *self.arguments(root / "data")],
                                          stdout=log, stderr=log)
        _wait_listening(self._proc, self.port, self.binary, self.log_path)

    def arguments(self, data: Path) -> list[str]:
        """Command-line arguments serving ``data`` on 127.0.0.1:``self.port``."""
        raise NotImplementedError

    def stop(self) -> None:
        _stop(self._proc)


class S3rverServer(NpmServer):
    """s3rver on a loopback port: an S3 server that ignores conditional writes."""

    tool = binary = "s3rver"
    env_var = "HASTATE_S3RVER"

    def arguments(self, data: Path) -> list[str]:
        return ["--address", "127.0.0.1", "--port", str(self.port), "--directory", str(data),
                "--silent", "--allow-mismatched-signatures"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class AzuriteServer(NpmServer):
    """Azurite's Blob service as its own process on a loopback port, data in a temp dir."""

    tool = "Azurite"
    binary = "azurite-blob"
    env_var = "HASTATE_AZURITE"

    def arguments(self, data: Path) -> list[str]:
        return ["--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
                str(data), "--silent", "--disableTelemetry", "--skipApiVersionCheck"]

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

    def create_bucket(self) -> str:
        """A fresh, empty container (Azure's bucket)."""
        name = f"c-{uuid.uuid4().hex[:16]}"
        self.service().create_container(name)
        return name

    def stored(self, container: str, name: str) -> tuple[dict[str, str], str]:
        """The blob's metadata and ETag as the server keeps them."""
        props = self.service().get_blob_client(container, name).get_blob_properties()
        return props.metadata, props.etag

    def overwrite(self, container: str, name: str, data: bytes) -> None:
        """Replace the blob's bytes behind the store's back, keeping its metadata."""
        self.service().get_blob_client(container, name).upload_blob(
            data, overwrite=True, metadata=self.stored(container, name)[0])


def cloud_store_url(request: pytest.FixtureRequest, backend: str) -> str:
    """URL of a fresh, empty store of a cloud ``backend`` (gcs, s3, azure) on its emulator."""
    if backend == "gcs":
        return f"gs://{request.getfixturevalue('gcs_bucket')}/cluster-a"
    server = request.getfixturevalue(f"{backend}_server")
    return server.url(server.create_bucket())


def open_test_url(url: str) -> SnapshotStore:
    """open_store with the tests' short retries and timeouts for the cloud schemes."""
    options = {"gs": GCS_OPTIONS, "s3": S3_OPTIONS, "az": AZURE_OPTIONS}.get(
        url.partition("://")[0], {})
    return open_store(url, **options)
