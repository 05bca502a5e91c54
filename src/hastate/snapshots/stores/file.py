"""Snapshot store in a local (or mounted) directory: ``file:///abs/dir``.

Objects are plain files at ``<root>/<name>``, written tmp + fsync + rename, so they can be
copied or inspected by hand. Generations are emulated: ``<root>/.hastate/counter`` holds a
store-wide counter that only grows, and ``<root>/.hastate/gen/<name>`` the generation of
each object (an object copied in by hand, without one, reports its mtime in ns). Writers
take an exclusive ``flock`` on ``<root>/.hastate/lock``, readers a shared one, so the
precondition check and the write are one step even across processes on this host. The
generation sidecar is replaced before the object: a crash in between leaves a generation
newer than the content, which only makes a stale writer's precondition fail.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hastate._fsutil import atomic_write, fsync_dir
from hastate.errors import SnapshotError, SnapshotNotFoundError
from hastate.snapshots.store import ObjectInfo, PreconditionFailed, check_name, location

logger = logging.getLogger(__name__)

_META_DIR = ".hastate"
#: errno values that mean "there is no object by that name" when opening a path.
_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)


class FileStore:
    """A directory of snapshot objects with emulated generations."""

    type = "file"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_absolute():
            raise ValueError(f"file store root must be an absolute path, got {self.root}")
        self._meta = self.root / _META_DIR
        self._ready = False

    def __str__(self) -> str:
        return self.root.as_uri()

    def init(self) -> None:
        """Create the directory and its ``.hastate`` bookkeeping if they are missing."""
        if self._ready:
            return
        try:
            if not (self._meta / "lock").is_file():
                (self._meta / "gen").mkdir(parents=True, exist_ok=True)
                (self._meta / "lock").touch()
        except OSError as exc:
            raise SnapshotError(f"{self}: cannot create the snapshot directory: {exc}; check "
                                "that the path is right and writable by this user") from exc
        self._ready = True

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Atomically replace ``name`` if the precondition holds; return the new generation."""
        check_name(name)
        with self._locked(fcntl.LOCK_EX):
            try:
                if if_generation_match is not None and \
                        if_generation_match != self._generation(name):
                    raise PreconditionFailed(location(self, name), if_generation_match)
                generation = int(self._read_text(self._meta / "counter") or 0) + 1
                atomic_write(self._meta / "counter", str(generation).encode())
                sidecar = self._meta / "gen" / name
                sidecar.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(sidecar, str(generation).encode())
                target = self.root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(target, data)
            except OSError as exc:
                raise SnapshotError(f"{location(self, name)}: write failed: {exc}; check free "
                                    "space and permissions") from exc
        logger.debug("wrote %s (%d bytes, generation %d)", location(self, name), len(data),
                     generation)
        return generation

    def read(self, name: str) -> bytes:
        """Return the content of ``name``."""
        check_name(name)
        with self._locked(fcntl.LOCK_SH):
            try:
                return (self.root / name).read_bytes()
            except OSError as exc:
                raise self._error(name, "read", exc) from exc

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Return the objects under ``prefix``, sorted by name."""
        with self._locked(fcntl.LOCK_SH):
            infos = []
            for name in self._walk(prefix.rpartition("/")[0]):
                if name.startswith(prefix):
                    st = (self.root / name).stat()
                    infos.append(ObjectInfo(name=name, size=st.st_size,
                                            generation=self._generation(name),
                                            updated_at=st.st_mtime))
        return sorted(infos, key=lambda info: info.name)

    def delete(self, name: str) -> None:
        """Remove ``name`` and its generation sidecar."""
        check_name(name)
        target = self.root / name
        with self._locked(fcntl.LOCK_EX):
            try:
                target.unlink()
            except OSError as exc:
                raise self._error(name, "delete", exc) from exc
            (self._meta / "gen" / name).unlink(missing_ok=True)
            fsync_dir(target.parent)

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        """Hold the store-wide flock (shared for readers, exclusive for writers).

        Readers of a directory whose bookkeeping cannot be created (a read-only copy of a
        store, e.g. a bucket downloaded for a restore) read unlocked: nobody writes there.
        """
        if not self._lockable(mode):
            yield
            return
        with open(self._meta / "lock", "rb") as f:
            fcntl.flock(f.fileno(), mode)
            yield

    def _lockable(self, mode: int) -> bool:
        """Initialise the store; False when only a reader can go on, without the lock."""
        try:
            self.init()
        except SnapshotError as exc:
            if mode != fcntl.LOCK_SH or not self.root.is_dir():
                raise
            logger.debug("reading %s without a lock: %s", self, exc)
            return False
        return True

    def _generation(self, name: str) -> int:
        """Current generation of ``name``, 0 when it does not exist; caller holds the lock."""
        try:
            mtime_ns = (self.root / name).stat().st_mtime_ns
        except OSError as exc:
            if exc.errno in _MISSING:
                return 0
            raise
        return int(self._read_text(self._meta / "gen" / name) or mtime_ns)

    def _walk(self, subdir: str) -> Iterator[str]:
        """Yield object names below ``subdir``, skipping bookkeeping and temporaries."""
        for dirpath, dirnames, filenames in os.walk(self.root / subdir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root)
            for filename in filenames:
                if not filename.startswith(".") and not filename.endswith(".tmp"):
                    yield (rel / filename).as_posix()

    @staticmethod
    def _read_text(path: Path) -> str:
        """Return a small bookkeeping file's content, or '' when it does not exist."""
        try:
            return path.read_text().strip()
        except OSError as exc:
            if exc.errno in _MISSING:
                return ""
            raise

    def _error(self, name: str, op: str, exc: OSError) -> SnapshotError:
        """Map an OSError to SnapshotNotFoundError or a SnapshotError naming the object."""
        if exc.errno in _MISSING:
            return SnapshotNotFoundError(f"{location(self, name)}: no such object")
        return SnapshotError(f"{location(self, name)}: {op} failed: {exc}; check permissions "
                             "and that the directory is mounted")


def from_url(url: str) -> FileStore:
    """Open ``file:///abs/dir`` (``file://localhost/abs/dir`` is accepted too)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise SnapshotError(f"{url}: a file store URL needs an absolute path, "
                            "e.g. file:///var/lib/hastate/snapshots")
    return FileStore(unquote(parts.path))
