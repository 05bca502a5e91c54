"""Disaster recovery through any node, on any engine (``POST /admin/*``, admin token).

* ``POST /admin/export {"to": URL?}``: a consistent export of the cluster's state uploaded
  to ``to`` (default ``<[snapshots] store>/exports``); 200 with its name, revision, keys.
* ``POST /admin/import {"from": URL?, "snapshot": NAME?, "cluster": NAME?}``: load a
  snapshot (default the newest in ``from``, default as above) into this running cluster;
  200 with what was written. 404 no such snapshot, 409 the cluster already holds keys,
  422 the snapshot failed verification (nothing written), 503 the store could not be read.

See :mod:`hastate.snapshots.portable`.
"""

from __future__ import annotations

from typing import Any

from hastate.errors import (CorruptDataError, RestoreTargetNotEmptyError, SnapshotError,
                            SnapshotNotFoundError)
from hastate.server.routes import Handler, Reply, Request, Served
from hastate.snapshots import portable
from hastate.snapshots.stores import open_store


def _store_url(server: Served, given: Any) -> str | Reply:
    """The exports store a request names, else the node's default; a 400 Reply when none."""
    if given is not None:
        if not isinstance(given, str) or "://" not in given:
            return Reply(400, {"error": f"store must be a URL like file:///dir or "
                               f"gs://bucket/prefix (got {given!r})"})
        return given
    config = server.manager.config
    store = config.snapshots.store if config is not None else None
    if store is None:
        return Reply(400, {"error": "no store URL given and no [snapshots] store in this "
                           "node's cluster file; pass one"})
    return portable.exports_url(store)


def export(server: Served, request: Request) -> Reply:
    """Export the state at one revision to the store."""
    url = _store_url(server, request.body.get("to"))
    if isinstance(url, Reply):
        return url
    try:
        taken = portable.take(server.manager, open_store(url))
    except SnapshotError as exc:
        return Reply(503, {"error": str(exc)})
    return Reply(200, {**taken.summary(), "store": url})


def import_(server: Served, request: Request) -> Reply:
    """Load a snapshot into this running, empty cluster."""
    url = _store_url(server, request.body.get("from"))
    if isinstance(url, Reply):
        return url
    name, cluster = request.body.get("snapshot"), request.body.get("cluster")
    if not all(v is None or isinstance(v, str) for v in (name, cluster)):
        return Reply(400, {"error": "snapshot and cluster must be strings"})
    try:
        loaded = portable.load_into(server.manager, open_store(url), name=name,
                                    cluster=cluster)
    except SnapshotNotFoundError as exc:
        return Reply(404, {"error": str(exc)})
    except CorruptDataError as exc:
        return Reply(422, {"error": f"{exc}; nothing was written"})
    except RestoreTargetNotEmptyError as exc:
        return Reply(409, {"error": str(exc)})
    except SnapshotError as exc:
        return Reply(503, {"error": str(exc)})
    return Reply(200, {**loaded.summary(), "store": url})


ROUTES: dict[tuple[str, str], tuple[Handler, bool]] = {
    ("POST", "/admin/export"): (export, True),
    ("POST", "/admin/import"): (import_, True),
}
