"""In-process snapshot store for tests: same contract as the real backends, no I/O.

``memory://name`` opens a store shared by every caller in the process that uses the same
name (so two simulated nodes see one "bucket"); ``memory://`` opens a private one. Never
use it in production: everything is lost when the process exits.
"""

from __future__ import annotations

import builtins
import threading
import time
from urllib.parse import urlsplit

from hastate.errors import SnapshotNotFoundError
from hastate.snapshots.store import ObjectInfo, PreconditionFailed, check_name, location

_shared: dict[str, MemoryStore] = {}
_shared_lock = threading.Lock()


class MemoryStore:
    """Objects in a dict, generations from a per-store counter that never repeats."""

    type = "memory"

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[bytes, int, float]] = {}
        self._last_generation = 0

    def __str__(self) -> str:
        return f"memory://{self.name}"

    def init(self) -> None:
        """Nothing to create: the dict exists from construction."""

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Store a copy of ``data`` under ``name`` if the precondition holds."""
        check_name(name)
        with self._lock:
            current = self._objects.get(name)
            if if_generation_match is not None and \
                    if_generation_match != (current[1] if current else 0):
                raise PreconditionFailed(location(self, name), if_generation_match)
            self._last_generation += 1
            self._objects[name] = (bytes(data), self._last_generation, time.time())
            return self._last_generation

    def read(self, name: str) -> bytes:
        """Return the stored bytes of ``name``."""
        with self._lock:
            found = self._objects.get(check_name(name))
        if found is None:
            raise SnapshotNotFoundError(f"{location(self, name)}: no such object")
        return found[0]

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Return the objects under ``prefix``, sorted by name."""
        with self._lock:
            items = sorted(self._objects.items())
        return [ObjectInfo(name=n, size=len(d), generation=g, updated_at=t)
                for n, (d, g, t) in items if n.startswith(prefix)]

    def delete(self, name: str) -> None:
        """Remove ``name``."""
        with self._lock:
            if self._objects.pop(check_name(name), None) is None:
                raise SnapshotNotFoundError(f"{location(self, name)}: no such object")


def from_url(url: str) -> MemoryStore:
    """Open ``memory://name`` (shared per name within the process) or a private ``memory://``."""
    parts = urlsplit(url)
    name = parts.netloc + parts.path
    if not name:
        return MemoryStore()
    with _shared_lock:
        return _shared.setdefault(name, MemoryStore(name))
