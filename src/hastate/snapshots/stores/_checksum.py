"""End-to-end content checks for backends whose SDK does not verify downloads itself.

Every object written by the S3 and Azure backends carries the SHA-256 of its bytes as
object metadata; a read recomputes it, so a corrupted object (or a bad transfer) is a
CorruptDataError instead of bad bytes. Objects put there by other tools have no such
metadata and are returned as they are (snapshots and segments carry their own checksums).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from hastate.errors import CorruptDataError

#: Metadata key holding the hex SHA-256 (letters and digits only: S3 sends it as an
#: ``x-amz-meta-`` header, Azure needs a C# identifier).
SHA256_KEY = "hastatesha256"


def metadata_for(data: bytes) -> dict[str, str]:
    """Object metadata recording the SHA-256 of ``data``."""
    return {SHA256_KEY: hashlib.sha256(data).hexdigest()}


def checked(data: bytes, metadata: Mapping[str, str] | None, where: str) -> bytes:
    """Return ``data`` if it matches the SHA-256 in ``metadata`` (when there is one)."""
    expected = {k.lower(): v for k, v in (metadata or {}).items()}.get(SHA256_KEY)
    if expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise CorruptDataError(f"{where}: SHA-256 check of the download failed (object "
                                   f"metadata says {expected}, content has {actual}); retry, "
                                   "and if it persists the stored object is corrupt")
    return data
