"""Snapshot store in Google Cloud Storage: ``gs://bucket/prefix[?retry_deadline=DURATION]``
(needs ``hastate[gcs]``).

Uses the official google-cloud-storage client (imported only here) with short, explicit
retries and timeouts: the library default retries for up to 120 s, which would stall the
uploader long after the caller stopped caring. Generations are GCS object generations and
preconditions are GCS ``ifGenerationMatch``; keep conditional objects (the manifest) under
8 MiB, where GCS and the emulator both honour them. Credentials come from the environment
(Application Default Credentials); with ``STORAGE_EMULATOR_HOST`` set the client talks to
that emulator anonymously. The node's service account needs ``roles/storage.objectAdmin``
on the bucket (list, get, create, delete objects); it does not need bucket metadata access.
"""

from __future__ import annotations

import builtins
import logging
import threading
import google.auth.exceptions
import requests
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY

from hastate.durations import parse_duration
from hastate.errors import ConfigError, CorruptDataError, SnapshotError, SnapshotNotFoundError
from hastate.snapshots.store import ObjectInfo, PreconditionFailed, check_name
from hastate.snapshots.stores._url import split_cloud_url

logger = logging.getLogger(__name__)

#: (connect, read) timeout of each HTTP request, in seconds.
DEFAULT_TIMEOUT = (5.0, 30.0)
#: How long one store call keeps retrying transient errors before giving up, in seconds.
DEFAULT_RETRY_DEADLINE = 15.0

_UNREACHABLE = (gexc.RetryError, gexc.ServerError, gexc.TooManyRequests,
                requests.exceptions.ConnectionError, requests.exceptions.Timeout)
#: Everything the client raises for a failed call (anything else is a bug, left alone).
_CLIENT_ERRORS = (gexc.GoogleAPICallError, gexc.RetryError, google.auth.exceptions.GoogleAuthError,
                  requests.exceptions.RequestException, DataCorruption)


class GCSStore:
    """Objects under ``gs://bucket/prefix/``, one client shared by all threads."""

    type = "gs"

    def __init__(self, bucket: str, prefix: str = "", *, client: storage.Client | None = None,
                 project: str | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 retry_deadline: float = DEFAULT_RETRY_DEADLINE) -> None:
        if not bucket:
            raise ValueError("GCS store needs a bucket name")
        if retry_deadline <= 0:
            raise ValueError(f"retry_deadline must be > 0 seconds, got {retry_deadline}")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self._retry = DEFAULT_RETRY.with_timeout(retry_deadline).with_delay(
            initial=min(0.25, retry_deadline), maximum=min(4.0, retry_deadline))
        self._project = project
        self._client = client
        self._bucket: storage.Bucket | None = None
        self._init_lock = threading.Lock()

    def __str__(self) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}" if self.prefix \
            else f"gs://{self.bucket_name}"

    def init(self) -> None:
        """Create the client and check that the bucket exists and can be listed."""
        self._connect()

    def _connect(self) -> storage.Bucket:
        """The bucket handle; the first call creates the client and lists one object."""
        with self._init_lock:
            if self._bucket is None:
                try:
                    client = self._client or storage.Client(project=self._project)
                    bucket = client.bucket(self.bucket_name)
                    list(bucket.list_blobs(prefix=self._key(""), max_results=1,
                                           retry=self._retry, timeout=self.timeout))
                except google.auth.exceptions.DefaultCredentialsError as exc:
                    raise SnapshotError(
                        f"{self}: no Google credentials found ({exc}); set "
                        "GOOGLE_APPLICATION_CREDENTIALS, run on a VM or pod with a service "
                        "account, or set STORAGE_EMULATOR_HOST for an emulator") from exc
                except _CLIENT_ERRORS as exc:
                    raise self._error(exc, "init", "") from exc
                self._bucket = bucket
                logger.debug("connected to %s", self)
            return self._bucket

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Upload ``name`` if the precondition holds; return the new generation."""
        blob = self._blob(name)
        try:
            blob.upload_from_string(data, content_type="application/octet-stream",
                                    if_generation_match=if_generation_match,
                                    retry=self._retry, timeout=self.timeout)
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, "write", name, if_generation_match) from exc
        logger.debug("wrote %s (%d bytes, generation %s)", self._where(name), len(data),
                     blob.generation)
        return int(blob.generation)

    def read(self, name: str) -> bytes:
        """Download ``name``; the client checks its crc32c."""
        blob = self._blob(name)
        try:
            data: bytes = blob.download_as_bytes(retry=self._retry, timeout=self.timeout)
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, "read", name) from exc
        return data

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """List the objects whose name (below the store prefix) starts with ``prefix``."""
        bucket = self._connect()
        strip = len(self._key(""))
        try:
            blobs = builtins.list(bucket.list_blobs(prefix=self._key(prefix), retry=self._retry,
                                                    timeout=self.timeout))
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, "list", prefix) from exc
        return sorted((ObjectInfo(name=b.name[strip:], size=int(b.size),
                                  generation=int(b.generation),
                                  updated_at=b.updated.timestamp()) for b in blobs),
                      key=lambda info: info.name)

    def delete(self, name: str) -> None:
        """Delete ``name``."""
        blob = self._blob(name)
        try:
            blob.delete(retry=self._retry, timeout=self.timeout)
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, "delete", name) from exc

    def _key(self, name: str) -> str:
        """Object key in the bucket for a store-relative name (or list prefix)."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def _where(self, name: str) -> str:
        """``gs://bucket/key`` of a store-relative name, for messages."""
        return f"gs://{self.bucket_name}/{self._key(name)}"

    def _blob(self, name: str) -> storage.Blob:
        """Blob handle for a validated name, initialising the store on first use."""
        key = self._key(check_name(name))
        return self._connect().blob(key)

    def _error(self, exc: Exception, op: str, name: str,
               if_generation_match: int | None = None) -> SnapshotError:
        """Map a client exception to a hastate error naming the bucket, object and the fix."""
        where = self._where(name) if name else str(self)
        if isinstance(exc, gexc.PreconditionFailed) and if_generation_match is not None:
            return PreconditionFailed(where, if_generation_match)
        if isinstance(exc, gexc.NotFound):
            if op in ("read", "delete"):
                return SnapshotNotFoundError(f"{where}: no such object")
            return SnapshotError(
                f"{where}: {op} failed: bucket {self.bucket_name!r} does not exist; create it "
                f"(gcloud storage buckets create gs://{self.bucket_name}) or fix the store URL")
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)):
            return SnapshotError(
                f"{where}: {op} failed: permission denied ({exc}); grant this node's service "
                f"account roles/storage.objectAdmin on gs://{self.bucket_name} or fix its "
                "credentials")
        if isinstance(exc, DataCorruption):
            return CorruptDataError(f"{where}: crc32c check of the download failed ({exc}); "
                                    "retry, and if it persists the stored object is corrupt")
        if isinstance(exc, _UNREACHABLE):
            cause = getattr(exc, "cause", None) or exc
            return SnapshotError(
                f"{where}: {op} failed: store unreachable (gave up after "
                f"{self.retry_deadline:g}s: {cause}); check the network, DNS and, if set, "
                "STORAGE_EMULATOR_HOST, then retry")
        if isinstance(exc, google.auth.exceptions.GoogleAuthError):
            return SnapshotError(f"{where}: {op} failed: cannot obtain credentials ({exc}); "
                                 "check GOOGLE_APPLICATION_CREDENTIALS or the service account")
        return SnapshotError(f"{where}: {op} failed: {exc}")


def from_url(url: str, *, client: storage.Client | None = None, project: str | None = None,
             timeout: tuple[float, float] = DEFAULT_TIMEOUT,
             retry_deadline: float = DEFAULT_RETRY_DEADLINE) -> GCSStore:
    """Open ``gs://bucket/prefix``; the keyword options are GCSStore's, and the URL's
    ``retry_deadline`` (seconds, or a duration such as ``500ms``) overrides the keyword."""
    bucket, prefix, options = split_cloud_url(url, container="bucket",
                                              example="gs://my-bucket/hastate",
                                              options=frozenset({"retry_deadline"}))
    if "retry_deadline" in options:
        retry_deadline = _duration(options["retry_deadline"], url)
    return GCSStore(bucket, prefix, client=client, project=project, timeout=timeout,
                    retry_deadline=retry_deadline)


def _duration(text: str, url: str) -> float:
    """A URL option read by hastate's one duration parser (a bare number is seconds)."""
    try:
        value: float | str = float(text)
    except ValueError:
        value = text
    try:
        return parse_duration(value, field="retry_deadline", minimum=0.001)
    except ConfigError as exc:
        raise SnapshotError(f"{url}: URL option {exc}") from None
