"""Snapshot store in Amazon S3 or an S3-compatible service: ``s3://bucket/prefix``.

Needs ``hastate[s3]`` (boto3, imported only here). Region and credentials come from the
usual AWS chain (``AWS_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, instance or pod roles); ``?profile=NAME`` picks a profile of the AWS
config files for this store alone (e.g. a mirror in a separate DR account). For an
S3-compatible service put its endpoint in the URL,
``s3://bucket/prefix?endpoint_url=https://minio.internal:9000`` (``region=`` is accepted
too), or set ``AWS_ENDPOINT_URL_S3`` as boto3 itself reads it. A service that ignores
conditional writes is refused when the store is first used (see
:meth:`S3Store._check_conditional_writes`).

Generations are the objects' ETags (see :mod:`._etag`) and preconditions are S3
conditional writes: ``If-None-Match: *`` to create, ``If-Match: <etag>`` to replace, so two
uploaders can never overwrite each other's manifest. A plain upload's ETag is the MD5 of
its bytes, so rewriting identical bytes keeps the generation; the manifest only moves
forward and never returns to earlier bytes, so its compare-and-set stays exact. Uploads
send ``Content-MD5`` (the server refuses a damaged transfer) and the SHA-256 as metadata,
checked on every read. The node's credentials need ``s3:ListBucket`` on the bucket and
``s3:GetObject``, ``s3:PutObject``, ``s3:DeleteObject`` on ``prefix/*``.
"""

from __future__ import annotations

import base64
import builtins
import functools
import hashlib
import logging
import threading
import uuid
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from hastate.errors import CorruptDataError, SnapshotError, SnapshotNotFoundError
from hastate.snapshots.store import ObjectInfo, PreconditionFailed, check_name
from hastate.snapshots.stores._checksum import checked, metadata_for
from hastate.snapshots.stores._etag import etag_of, generation_of
from hastate.snapshots.stores._url import check_endpoint, split_cloud_url

logger = logging.getLogger(__name__)

#: (connect, read) timeout of each HTTP request, in seconds.
DEFAULT_TIMEOUT = (5.0, 30.0)
#: Attempts per call (botocore's "standard" retry mode: transient errors and throttling).
DEFAULT_MAX_ATTEMPTS = 4
_URL_OPTIONS = frozenset({"endpoint_url", "region", "profile"})
#: Error codes S3 (and compatible servers) use for a failed write precondition.
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "ExpiredToken", "InvalidToken"}
_UNREACHABLE = (botocore.exceptions.EndpointConnectionError,
                botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError,
                botocore.exceptions.ConnectionClosedError)


_session_lock = threading.Lock()


@functools.cache
def _session(profile: str | None) -> boto3.session.Session:
    """The process's boto3 session for ``profile`` (None: the default credential chain).

    A new client from a session costs a third of a new session's: the session keeps the
    loaded service model across the clients of the store, its mirrors and copies. It also
    caches the credentials once found (refreshable ones refresh themselves).
    """
    return boto3.session.Session(profile_name=profile)


class S3Store:
    """Objects under ``s3://bucket/prefix/``; one boto3 client (thread-safe) for all threads."""

    type = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, profile: str | None = None, client: Any = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if not bucket:
            raise ValueError("S3 store needs a bucket name")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.profile = profile
        self.timeout = timeout
        self.max_attempts = max_attempts
        self._client = client
        self._ready = False
        self._init_lock = threading.Lock()

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def init(self) -> None:
        """Create the client and check that the bucket exists and can be listed."""
        self._connect()

    def _connect(self) -> Any:
        """The client; the first call creates it and lists one key to check access."""
        with self._init_lock:
            if self._client is None:
                config = botocore.config.Config(
                    connect_timeout=self.timeout[0], read_timeout=self.timeout[1],
                    retries={"max_attempts": self.max_attempts, "mode": "standard"},
                    # Content-MD5 and our SHA-256 cover integrity; the newer default
                    # checksum trailers are refused by many S3-compatible servers.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required")
                try:
                    with _session_lock:   # boto3 sessions are not thread-safe; clients are
                        self._client = _session(self.profile).client(
                            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            config=config)
                except botocore.exceptions.ProfileNotFound as exc:
                    raise SnapshotError(f"{self}: AWS profile {self.profile!r} not found "
                                        f"({exc}); add it to ~/.aws/config (or the file in "
                                        "AWS_CONFIG_FILE) or fix ?profile= in the URL") from exc
            if not self._ready:
                try:
                    self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""),
                                                 MaxKeys=1)
                    self._check_conditional_writes(self._client)
                except (botocore.exceptions.BotoCoreError,
                        botocore.exceptions.ClientError) as exc:
                    raise self._error(exc, "init", "") from exc
                self._ready = True
                logger.debug("connected to %s", self)
            return self._client

    def _check_conditional_writes(self, client: Any) -> None:
        """Refuse a service that ignores ``If-None-Match``: the manifest's safety needs it.

        Some S3-compatible servers accept the header and overwrite anyway; with them two
        uploaders could silently replace each other's manifest. A throw-away object under
        ``.hastate/`` (never a valid object name, so never listed as one) is created twice.
        """
        key = self._key(f".hastate/precondition-probe-{uuid.uuid4().hex}")
        client.put_object(Bucket=self.bucket, Key=key, Body=b"")
        try:
            client.put_object(Bucket=self.bucket, Key=key, Body=b"", IfNoneMatch="*")
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) not in _PRECONDITION_CODES:
                raise
        else:
            raise SnapshotError(
                f"{self}: the S3 service at {self.endpoint_url or 'the default endpoint'} "
                "ignores conditional writes (If-None-Match); hastate needs them so that two "
                "uploaders can never overwrite each other's manifest: use a service that "
                "supports them (AWS S3 does)")
        finally:
            client.delete_object(Bucket=self.bucket, Key=key)

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Upload ``name`` if the precondition holds; return the new generation."""
        key = self._key(check_name(name))
        client = self._connect()
        args: dict[str, Any] = {
            "Bucket": self.bucket, "Key": key, "Body": data,
            "ContentType": "application/octet-stream", "Metadata": metadata_for(data),
            "ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode()}
        if if_generation_match == 0:
            args["IfNoneMatch"] = "*"
        elif if_generation_match is not None:
            etag = etag_of(if_generation_match)
            if etag is None:
                raise PreconditionFailed(self._where(name), if_generation_match)
            args["IfMatch"] = etag
        try:
            response = client.put_object(**args)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc, "write", name, if_generation_match) from exc
        generation = generation_of(response["ETag"])
        logger.debug("wrote %s (%d bytes, etag %s)", self._where(name), len(data),
                     response["ETag"])
        return generation

    def read(self, name: str) -> bytes:
        """Download ``name`` and check it against the SHA-256 stored with it."""
        key = self._key(check_name(name))
        client = self._connect()
        try:
            response = client.get_object(Bucket=self.bucket, Key=key)
            data: bytes = response["Body"].read()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc, "read", name) from exc
        return checked(data, response.get("Metadata"), self._where(name))

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """List the objects whose name (below the store prefix) starts with ``prefix``."""
        client = self._connect()
        strip = len(self._key(""))
        infos = []
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for obj in page.get("Contents", ()):
                    infos.append(ObjectInfo(name=obj["Key"][strip:], size=int(obj["Size"]),
                                            generation=generation_of(obj["ETag"]),
                                            updated_at=obj["LastModified"].timestamp()))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc, "list", prefix) from exc
        return sorted(infos, key=lambda info: info.name)

    def delete(self, name: str) -> None:
        """Delete ``name``; S3 deletes of missing keys succeed, so existence is checked first."""
        key = self._key(check_name(name))
        client = self._connect()
        try:
            client.head_object(Bucket=self.bucket, Key=key)
            client.delete_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc, "delete", name) from exc

    def _key(self, name: str) -> str:
        """Object key in the bucket for a store-relative name (or list prefix)."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def _where(self, name: str) -> str:
        """``s3://bucket/key`` of a store-relative name, for messages."""
        return f"s3://{self.bucket}/{self._key(name)}"

    def _error(self, exc: Exception, op: str, name: str,
               if_generation_match: int | None = None) -> SnapshotError:
        """Map a botocore exception to a hastate error naming the bucket, object and fix."""
        where = self._where(name) if name else str(self)
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return SnapshotError(f"{where}: {op} failed: no AWS credentials found; set "
                                 "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or "
                                 "run with an instance or pod role")
        if isinstance(exc, _UNREACHABLE):
            endpoint = self.endpoint_url or "the AWS endpoint"
            return SnapshotError(f"{where}: {op} failed: store unreachable at {endpoint} "
                                 f"after {self.max_attempts} attempts ({exc}); check the "
                                 "network, DNS and endpoint_url, then retry")
        if not isinstance(exc, botocore.exceptions.ClientError):
            return SnapshotError(f"{where}: {op} failed: {exc}")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if if_generation_match is not None and (
                code in _PRECONDITION_CODES or (code in _MISSING_CODES and if_generation_match)):
            return PreconditionFailed(where, if_generation_match)
        if code == "NoSuchBucket" or (op in ("init", "list") and code in _MISSING_CODES):
            return SnapshotError(f"{where}: {op} failed: bucket {self.bucket!r} does not "
                                 f"exist; create it (aws s3 mb s3://{self.bucket}) or fix the "
                                 "store URL")
        if code in _MISSING_CODES and op in ("read", "delete"):
            return SnapshotNotFoundError(f"{where}: no such object")
        if code in _DENIED_CODES:
            return SnapshotError(f"{where}: {op} failed: permission denied ({code}); grant "
                                 f"s3:ListBucket on {self.bucket} and s3:GetObject, "
                                 "s3:PutObject, s3:DeleteObject on its objects, or fix the "
                                 "credentials")
        if code in ("BadDigest", "InvalidDigest"):
            return CorruptDataError(f"{where}: {op} failed: the server received bytes that do "
                                    f"not match their Content-MD5 ({code}); retry")
        return SnapshotError(f"{where}: {op} failed: {exc}")


def from_url(url: str, *, client: Any = None, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
             max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> S3Store:
    """Open ``s3://bucket/prefix[?endpoint_url=...&region=...&profile=...]``."""
    bucket, prefix, options = split_cloud_url(url, container="bucket",
                                              example="s3://my-bucket/hastate",
                                              options=_URL_OPTIONS)
    endpoint = options.get("endpoint_url")
    return S3Store(bucket, prefix, endpoint_url=check_endpoint(endpoint, url) if endpoint else None,
                   region=options.get("region"), profile=options.get("profile"),
                   client=client, timeout=timeout,
                   max_attempts=max_attempts)
