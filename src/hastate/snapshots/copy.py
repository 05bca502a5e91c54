"""Copy a cluster's snapshots, shipped log segments and manifest from one store to another.

Used to seed or repair a disaster-recovery copy in another cloud. Every object is verified
where it is read (snapshots fully against the manifest, segments against their own
checksums) and again after it is written, by reading it back from the destination. The
destination's manifest is updated last, with compare-and-set, listing the union of both
stores' snapshots: an interrupted copy leaves only unlisted objects, which a later prune
removes, and snapshots a leader already mirrored there are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field

from hastate.errors import CorruptDataError, SnapshotNotFoundError
from hastate.snapshots.format import Manifest, SnapshotMeta, read_manifest, update_manifest, verify
from hastate.snapshots.segments import list_segments, read_segment
from hastate.snapshots.store import PreconditionFailed, SnapshotStore, location

logger = logging.getLogger(__name__)


@dataclass
class CopyResult:
    """What a copy wrote, what it found already there, and the destination's manifest."""

    cluster: str
    copied: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    snapshots_listed: int = 0

    def summary(self) -> dict[str, object]:
        """JSON-friendly description for the CLI."""
        return {"cluster": self.cluster, "copied": len(self.copied),
                "already_present": len(self.already_present),
                "bytes_copied": self.bytes_copied, "snapshots_listed": self.snapshots_listed,
                "objects": self.copied}


def copy_store(source: SnapshotStore, dest: SnapshotStore, *,
               cluster: str | None = None) -> CopyResult:
    """Copy every listed snapshot, every segment and the manifest entries to ``dest``.

    ``cluster`` (default: the source manifest's) is checked against the source manifest and
    every object. Raises SnapshotNotFoundError when the source has no manifest,
    CorruptDataError when an object fails verification on either side (nothing more is
    listed in the destination then), SnapshotError when a store fails.
    """
    manifest, _ = read_manifest(source)
    if manifest is None:
        raise SnapshotNotFoundError(f"{location(source, 'manifest.json')}: no manifest; "
                                    "check the --from URL, or nothing was uploaded yet")
    cluster = cluster or manifest.cluster
    if manifest.cluster != cluster:
        raise CorruptDataError(f"{location(source, 'manifest.json')}: belongs to cluster "
                               f"{manifest.cluster!r}, not {cluster!r}")
    result = CopyResult(cluster=cluster)
    for meta in reversed(manifest.snapshots):            # oldest first
        verify(source, meta.name, cluster)
        _copy_object(source, dest, meta.name, result, expected_sha256=meta.sha256)
    for _first, _last, name in list_segments(source):
        read_segment(source, name, cluster)                # verifies before copying
        _copy_object(source, dest, name, result)
    listed = update_manifest(dest, cluster, lambda m: merge_manifest(m, manifest.snapshots))
    for meta in manifest.snapshots:
        verify(dest, meta.name, cluster)                   # full check through the new manifest
    result.snapshots_listed = len(listed.snapshots)
    logger.info("copied %d objects (%d bytes) from %s to %s; %d already present",
                len(result.copied), result.bytes_copied, source, dest,
                len(result.already_present))
    return result


def _copy_object(source: SnapshotStore, dest: SnapshotStore, name: str, result: CopyResult,
                 *, expected_sha256: str | None = None) -> None:
    """Write ``name`` to ``dest`` unless an identical copy is there; verify it by reading back."""
    data = source.read(name)
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise CorruptDataError(f"{location(source, name)}: changed while being copied "
                               f"(SHA-256 {digest}, manifest says {expected_sha256}); retry")
    try:
        dest.write(name, data, if_generation_match=0)
    except PreconditionFailed:
        result.already_present.append(name)
    else:
        result.copied.append(name)
        result.bytes_copied += len(data)
    stored = hashlib.sha256(dest.read(name)).hexdigest()
    if stored != digest:
        raise CorruptDataError(f"{location(dest, name)}: differs from {location(source, name)} "
                               f"(SHA-256 {stored}, source {digest}); a different object of "
                               "that name is already there, or the write was damaged: delete "
                               "it and copy again")


def merge_manifest(current: Manifest, snapshots: tuple[SnapshotMeta, ...]) -> Manifest:
    """``current`` plus the entries of ``snapshots`` it lacks, newest first."""
    names = {s.name for s in current.snapshots}
    union = [*current.snapshots, *(s for s in snapshots if s.name not in names)]
    return dataclasses.replace(current, snapshots=tuple(sorted(union, key=lambda s: -s.index)))
