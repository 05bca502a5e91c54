"""The byte-level contract every snapshot backend implements.

A store holds named objects (``snapshots/…``, ``manifest.json``) under one location. Every
object has a *generation*: a positive integer that changes on each write and is never
reused for that name, so ``write(..., if_generation_match=g)`` is a compare-and-set
(``0`` means "must not exist yet"). One allowed difference: on S3 the generation is the
ETag, the MD5 of the bytes, so rewriting identical bytes keeps it (a compare-and-set then
still only succeeds on exactly the content the writer read). Multi-step logic (manifest,
verification, retention) lives in :mod:`hastate.snapshots.format` as functions over this
Protocol.

Backends live in :mod:`hastate.snapshots.stores`, one module each, found by URL scheme
through its ``BACKENDS`` map; :func:`hastate.snapshots.stores.open_store` opens a URL.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hastate.errors import SnapshotError

__all__ = ["MAX_NAME_BYTES", "ObjectInfo", "PreconditionFailed", "SnapshotStore", "check_name",
           "location"]

#: Longest object name GCS accepts (bytes of UTF-8); applied to every backend alike.
MAX_NAME_BYTES = 1024


class PreconditionFailed(SnapshotError):
    """Raised when a write's ``if_generation_match`` does not match the object's generation."""

    def __init__(self, location: str, expected: int) -> None:
        wanted = "to not exist yet" if expected == 0 else f"to be at generation {expected}"
        super().__init__(f"{location}: precondition failed: expected the object {wanted}, "
                         "but another writer changed it first; re-read it and retry")
        self.location = location
        self.expected = expected


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing says about one object, without downloading it."""

    name: str
    size: int
    generation: int
    updated_at: float


@runtime_checkable
class SnapshotStore(Protocol):
    """**Protocol:** a flat namespace of byte objects with generation preconditions.

    Implementations are safe to call from several threads, create their location lazily
    on first use, raise SnapshotNotFoundError for a missing object, PreconditionFailed for
    a failed generation precondition, and SnapshotError (naming the location and what to
    do) for anything else. ``str(store)`` is the store's URL, used in messages.
    """

    @property
    def type(self) -> str:
        """Short backend name for logs and metrics: ``file``, ``gs``, ``s3``, ``az``, ``memory``."""
        ...

    def init(self) -> None:
        """Check (or create) the store's location; idempotent, called lazily by every op."""
        ...

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Replace object ``name`` atomically and return its new generation."""
        ...

    def read(self, name: str) -> bytes:
        """Return the whole content of object ``name``."""
        ...

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Return the objects whose name starts with ``prefix``, sorted by name."""
        ...

    def delete(self, name: str) -> None:
        """Remove object ``name``."""
        ...


def check_name(name: str) -> str:
    """Refuse object names that could escape the store or that some backend cannot hold."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"object name must be a non-empty string, got {name!r}")
    parts = name.split("/")
    if (len(name.encode()) > MAX_NAME_BYTES or any(p == "" or p.startswith(".") for p in parts)
            or name.endswith(".tmp") or any(c in name for c in "\0\\\r\n")):
        raise ValueError(f"invalid object name {name!r}: use '/'-separated, non-empty parts "
                         "that do not start with '.', no '.tmp' suffix (both are reserved "
                         f"for temporaries), at most {MAX_NAME_BYTES} bytes")
    return name


def location(store: SnapshotStore, name: str) -> str:
    """Full, human-readable address of an object, for error messages and logs."""
    return f"{str(store).rstrip('/')}/{name}"
