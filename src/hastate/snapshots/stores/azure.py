"""Snapshot store in Azure Blob Storage: ``az://container/prefix``.

Needs ``hastate[azure]`` (azure-storage-blob, imported only here). The account comes from
the environment, first match wins:

* ``AZURE_STORAGE_CONNECTION_STRING`` (also how to reach Azurite), unless the URL names
  an account;
* the account from ``?account=NAME`` in the URL or ``AZURE_STORAGE_ACCOUNT``, with
  ``AZURE_STORAGE_KEY``, or ``AZURE_STORAGE_SAS_TOKEN``, or (when azure-identity is
  installed) ``DefaultAzureCredential`` (managed identity, workload identity, az login).

``?endpoint_url=`` replaces ``https://<account>.blob.core.windows.net`` (sovereign clouds,
private endpoints). Generations are the blobs' ETags (see :mod:`._etag`), which change on
every write; preconditions are ``If-None-Match: *`` to create and ``If-Match: <etag>`` to
replace, so two uploaders can never overwrite each other's manifest. Uploads send
Content-MD5 (the service refuses a damaged transfer) and the SHA-256 as blob metadata,
checked on every read. The identity needs "Storage Blob Data Contributor" on the container.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
from typing import Any

from azure.core import MatchConditions
from azure.core import exceptions as aexc
from azure.storage.blob import BlobServiceClient, ContainerClient

from hastate.errors import SnapshotError, SnapshotNotFoundError
from hastate.snapshots.store import ObjectInfo, PreconditionFailed, check_name
from hastate.snapshots.stores._checksum import checked, metadata_for
from hastate.snapshots.stores._etag import etag_of, generation_of
from hastate.snapshots.stores._url import check_endpoint, split_cloud_url

logger = logging.getLogger(__name__)

#: (connect, read) timeout of each HTTP request, in seconds.
DEFAULT_TIMEOUT = (5.0, 30.0)
#: Retries per call after the first attempt (the SDK's exponential policy).
DEFAULT_RETRIES = 3
_URL_OPTIONS = frozenset({"account", "endpoint_url"})
_CREDENTIAL_HELP = ("set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with "
                    "AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or install azure-identity "
                    "for managed identity")
_CLIENT_ERRORS = (aexc.AzureError,)


class AzureBlobStore:
    """Blobs under ``az://container/prefix/``; one (thread-safe) container client."""

    type = "az"

    def __init__(self, container: str, prefix: str = "", *, account: str | None = None,
                 endpoint_url: str | None = None, client: ContainerClient | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES) -> None:
        if not container:
            raise ValueError("Azure store needs a container name")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.container = container
        self.prefix = prefix.strip("/")
        self.account = account
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self.retries = retries
        self._client = client
        self._ready = False
        self._init_lock = threading.Lock()

    def __str__(self) -> str:
        return f"az://{self.container}/{self.prefix}" if self.prefix \
            else f"az://{self.container}"

    def init(self) -> None:
        """Create the client and check that the container exists and can be listed."""
        self._connect()

    def _service(self) -> BlobServiceClient:
        """A service client for the account found in the URL or the environment."""
        options: dict[str, Any] = {"connection_timeout": self.timeout[0],
                                   "read_timeout": self.timeout[1],
                                   "retry_total": self.retries}
        connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if connection_string and self.account is None:
            return BlobServiceClient.from_connection_string(connection_string, **options)
        account = self.account or os.environ.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise SnapshotError(f"{self}: no Azure storage account given; {_CREDENTIAL_HELP}")
        url = self.endpoint_url or f"https://{account}.blob.core.windows.net"
        credential: Any
        if os.environ.get("AZURE_STORAGE_KEY"):
            credential = {"account_name": account,
                          "account_key": os.environ["AZURE_STORAGE_KEY"]}
        elif os.environ.get("AZURE_STORAGE_SAS_TOKEN"):
            credential = os.environ["AZURE_STORAGE_SAS_TOKEN"]
        else:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                raise SnapshotError(f"{self}: no credential for account {account!r}; "
                                    f"{_CREDENTIAL_HELP}") from None
            credential = DefaultAzureCredential()
        return BlobServiceClient(url, credential=credential, **options)

    def _connect(self) -> ContainerClient:
        """The container client; the first call creates it and lists one blob."""
        with self._init_lock:
            if self._client is None:
                try:
                    self._client = self._service().get_container_client(self.container)
                except (ValueError, *_CLIENT_ERRORS) as exc:
                    raise SnapshotError(f"{self}: cannot set up the Azure client ({exc}); "
                                        f"{_CREDENTIAL_HELP}") from exc
            if not self._ready:
                try:
                    next(self._client.list_blobs(name_starts_with=self._key(""),
                                                 results_per_page=1).by_page(), None)
                except _CLIENT_ERRORS as exc:
                    raise self._error(exc, "init", "") from exc
                self._ready = True
                logger.debug("connected to %s", self)
            return self._client

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Upload ``name`` if the precondition holds; return the new generation."""
        key = self._key(check_name(name))
        blob = self._connect().get_blob_client(key)
        conditions: dict[str, Any] = {"overwrite": True}
        if if_generation_match == 0:
            conditions = {"overwrite": False}
        elif if_generation_match is not None:
            etag = etag_of(if_generation_match)
            if etag is None:
                raise PreconditionFailed(self._where(name), if_generation_match)
            conditions["etag"] = etag
            conditions["match_condition"] = MatchConditions.IfNotModified
        try:
            result = blob.upload_blob(data, metadata=metadata_for(data), validate_content=True,
                                      **conditions)
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, "write", name, if_generation_match) from exc
        logger.debug("wrote %s (%d bytes, etag %s)", self._where(name), len(data),
                     result["etag"])
        return generation_of(result["etag"])

    def read(self, name: str) -> bytes:
        """Download ``name`` and check it against the SHA-256 stored with it."""
        key = self._key(check_name(name))
        blob = self._connect().get_blob_client(key)
        try:
            download = blob.download_blob()
            data = download.readall()
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, "read", name) from exc
        return checked(data, download.properties.metadata, self._where(name))

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """List the blobs whose name (below the store prefix) starts with ``prefix``."""
        container = self._connect()
        strip = len(self._key(""))
        try:
            infos = [ObjectInfo(name=b.name[strip:], size=int(b.size),
                                generation=generation_of(b.etag),
                                updated_at=b.last_modified.timestamp())
                     for b in container.list_blobs(name_starts_with=self._key(prefix))]
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, "list", prefix) from exc
        return sorted(infos, key=lambda info: info.name)

    def delete(self, name: str) -> None:
        """Delete ``name``."""
        key = self._key(check_name(name))
        try:
            self._connect().get_blob_client(key).delete_blob()
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, "delete", name) from exc

    def _key(self, name: str) -> str:
        """Blob name in the container for a store-relative name (or list prefix)."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def _where(self, name: str) -> str:
        """``az://container/blob`` of a store-relative name, for messages."""
        return f"az://{self.container}/{self._key(name)}"

    def _error(self, exc: Exception, op: str, name: str,
               if_generation_match: int | None = None) -> SnapshotError:
        """Map an Azure SDK exception to a hastate error naming the container, blob and fix."""
        where = self._where(name) if name else str(self)
        code = str(getattr(exc, "error_code", "") or "")
        if code == "ContainerNotFound":
            return SnapshotError(f"{where}: {op} failed: container {self.container!r} does not "
                                 f"exist; create it (az storage container create -n "
                                 f"{self.container}) or fix the store URL")
        if if_generation_match is not None and isinstance(
                exc, (aexc.ResourceModifiedError, aexc.ResourceExistsError,
                      aexc.ResourceNotFoundError)):
            return PreconditionFailed(where, if_generation_match)
        if isinstance(exc, aexc.ResourceNotFoundError) and op in ("read", "delete"):
            return SnapshotNotFoundError(f"{where}: no such object")
        if isinstance(exc, aexc.ClientAuthenticationError) or \
                getattr(exc, "status_code", None) == 403:
            return SnapshotError(f"{where}: {op} failed: permission denied ({code or exc}); "
                                 "grant this identity \"Storage Blob Data Contributor\" on the "
                                 f"container, or fix the credentials ({_CREDENTIAL_HELP})")
        if isinstance(exc, (aexc.ServiceRequestError, aexc.ServiceResponseError)):
            return SnapshotError(f"{where}: {op} failed: store unreachable after "
                                 f"{self.retries} retries ({exc}); check the network, DNS and "
                                 "the account endpoint, then retry")
        return SnapshotError(f"{where}: {op} failed: {exc}")


def from_url(url: str, *, client: ContainerClient | None = None,
             timeout: tuple[float, float] = DEFAULT_TIMEOUT,
             retries: int = DEFAULT_RETRIES) -> AzureBlobStore:
    """Open ``az://container/prefix[?account=NAME&endpoint_url=...]``."""
    container, prefix, options = split_cloud_url(url, container="container",
                                                 example="az://my-container/hastate",
                                                 options=_URL_OPTIONS)
    endpoint = options.get("endpoint_url")
    return AzureBlobStore(container, prefix, account=options.get("account"),
                          endpoint_url=check_endpoint(endpoint, url) if endpoint else None,
                          client=client, timeout=timeout, retries=retries)
