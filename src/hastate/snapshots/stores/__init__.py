"""Snapshot store backends, one module each, and the map from URL scheme to backend.

Each backend module exposes ``from_url(url, **options)`` returning a
:class:`~hastate.snapshots.store.SnapshotStore`. Modules are imported only when a URL of
their scheme is opened, so a cloud SDK (an optional extra) is loaded only by the nodes
that use it. Adding a backend means adding its module and one line to :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hastate.errors import SnapshotError

if TYPE_CHECKING:
    from hastate.snapshots.store import SnapshotStore


@dataclass(frozen=True)
class Backend:
    """Where the backend of one URL scheme lives and how to install what it needs."""

    module: str             # module under hastate.snapshots.stores
    example: str            # a URL shown in error messages
    extra: str | None = None  # pip extra with its SDK (None: no dependency)


#: URL scheme -> backend. The only registry: ``open_store`` knows nothing else.
BACKENDS: dict[str, Backend] = {
    "file": Backend("file", "file:///var/lib/hastate/snapshots"),
    "memory": Backend("memory", "memory://name"),
    "gs": Backend("gcs", "gs://bucket/prefix", extra="gcs"),
    "s3": Backend("s3", "s3://bucket/prefix", extra="s3"),
    "az": Backend("azure", "az://container/prefix", extra="azure"),
}

_SCHEME_RE = re.compile(r"^[a-z][a-z0-9]*$")


def _schemes() -> str:
    """The accepted URL forms, for error messages."""
    return ", ".join(b.example for b in BACKENDS.values())


def open_store(url: str, **options: Any) -> SnapshotStore:
    """Open the store at ``url``; nothing is contacted until the first operation.

    ``options`` go to the backend's ``from_url`` (e.g. ``timeout=`` for ``gs``). An unknown
    scheme, or a backend whose optional SDK is not installed, is a SnapshotError naming the
    scheme and the fix.
    """
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if not _SCHEME_RE.match(scheme):
        raise SnapshotError(f"snapshot store URL {url!r} has no scheme; use one of {_schemes()}")
    backend = BACKENDS.get(scheme)
    if backend is None:
        raise SnapshotError(f"{url}: unknown snapshot store scheme {scheme!r}; use one of "
                            f"{_schemes()}")
    module_name = f"{__name__}.{backend.module}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or backend.extra is None:
            raise
        raise SnapshotError(f"{url}: the {scheme}:// store needs the Python package "
                            f"{exc.name!r}, which is not installed; install it with "
                            f"pip install 'hastate[{backend.extra}]'") from exc
    store: SnapshotStore = module.from_url(url, **options)
    return store
