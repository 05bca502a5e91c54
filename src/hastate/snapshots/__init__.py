"""Off-cluster snapshots: stores (file, gs, s3, az, memory), the manifest, verification,
retention, mirrors and copies between stores.

Backends (``stores/``) are imported on demand by :func:`open_store`, so a cloud SDK (an
optional extra) is only loaded when a URL of its scheme is opened.
"""

from hastate.snapshots.format import (
    MANIFEST_NAME,
    Manifest,
    SnapshotMeta,
    StaleSnapshotError,
    latest,
    list_snapshots,
    load,
    prune,
    prune_segments,
    read_manifest,
    segment_name,
    snapshot_name,
    update_manifest,
    verify,
    write_snapshot,
)
from hastate.snapshots.store import ObjectInfo, PreconditionFailed, SnapshotStore
from hastate.snapshots.stores import open_store
from hastate.snapshots.uploader import SnapshotUploader, UploaderStatus

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "ObjectInfo",
    "PreconditionFailed",
    "SnapshotMeta",
    "SnapshotStore",
    "SnapshotUploader",
    "StaleSnapshotError",
    "UploaderStatus",
    "latest",
    "list_snapshots",
    "load",
    "open_store",
    "prune",
    "prune_segments",
    "read_manifest",
    "segment_name",
    "snapshot_name",
    "update_manifest",
    "verify",
    "write_snapshot",
]
