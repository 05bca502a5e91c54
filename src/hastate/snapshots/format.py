"""Snapshot objects, the manifest, verification and retention, as functions over a store.

Layout of a store::

    manifest.json                               newest-first list of snapshots (JSON)
    snapshots/<index:020d>-<term>.hsnap         dump container (hastate.state.dump)
    segments/<first:020d>-<last:020d>.hseg      log segments (later; only pruned here)

A snapshot is the dump container of the state body at Raft ``(index, term)``, where
``term`` is the term of the entry at ``index``. Names sort by index. The manifest is the
source of truth for what is restorable: an object not listed in it is an orphan (an
upload that crashed before its manifest update) and is removed by :func:`prune`.

The manifest only moves forward: it is changed with compare-and-set on its generation
(:func:`update_manifest`), and a snapshot whose index is not newer than the newest listed
one is refused (:class:`StaleSnapshotError`). So two nodes that both believe they lead can
never overwrite each other's newer manifest, and a deposed leader cannot add entries
behind a concurrent :func:`prune`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hastate.errors import CorruptDataError, SnapshotError, SnapshotNotFoundError
from hastate.snapshots.store import PreconditionFailed, SnapshotStore, location
from hastate.state.dump import DumpHeader, decode_dump, encode_dump

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SNAPSHOT_PREFIX = "snapshots/"
SEGMENT_PREFIX = "segments/"
#: Version of the manifest layout; readers refuse versions they do not know.
MANIFEST_FORMAT_VERSION = 1
#: Compare-and-set attempts on the manifest before giving up on a busy writer.
MANIFEST_ATTEMPTS = 8

_SNAPSHOT_RE = re.compile(r"^snapshots/(\d{20})-(\d+)\.hsnap$")
_SEGMENT_RE = re.compile(r"^segments/(\d{20})-(\d{20})\.hseg$")


class StaleSnapshotError(SnapshotError):
    """Raised when a snapshot is not newer than the newest one the manifest lists."""

    def __init__(self, name: str, newest: SnapshotMeta) -> None:
        super().__init__(f"{name}: not newer than {newest.name} (index {newest.index}, term "
                         f"{newest.term}) already in the manifest; another node, probably a "
                         "newer leader, uploaded it first: this snapshot was discarded")
        self.newest = newest


@dataclass(frozen=True)
class SnapshotMeta:
    """One manifest entry: what a snapshot object holds and how to check it."""

    name: str
    cluster: str
    index: int
    term: int
    created_at: float
    format_version: int
    size: int
    sha256: str
    keys: int


@dataclass(frozen=True)
class Manifest:
    """The list of restorable snapshots of one cluster, newest first."""

    cluster: str
    snapshots: tuple[SnapshotMeta, ...] = ()
    format_version: int = MANIFEST_FORMAT_VERSION

    @property
    def newest(self) -> SnapshotMeta | None:
        """The snapshot a restore should use, or None when there is none."""
        return self.snapshots[0] if self.snapshots else None


def snapshot_name(index: int, term: int) -> str:
    """Object name of the snapshot at ``(index, term)``; names sort by index."""
    return f"{SNAPSHOT_PREFIX}{index:020d}-{term}.hsnap"


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    """``(index, term)`` of a snapshot object name, or None if ``name`` is not one."""
    match = _SNAPSHOT_RE.match(name)
    return (int(match[1]), int(match[2])) if match else None


def segment_name(first: int, last: int) -> str:
    """Object name of the log segment holding entries ``first..last`` (inclusive)."""
    return f"{SEGMENT_PREFIX}{first:020d}-{last:020d}.hseg"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """``(first, last)`` of a log segment object name, or None if ``name`` is not one."""
    match = _SEGMENT_RE.match(name)
    return (int(match[1]), int(match[2])) if match else None


# --- manifest codec -------------------------------------------------------------------

_ENTRY_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str, "cluster": str, "index": int, "term": int, "created_at": (int, float),
    "format_version": int, "size": int, "sha256": str, "keys": int}


def encode_manifest(manifest: Manifest) -> bytes:
    """Serialize a manifest as stable, human-readable JSON."""
    doc = {"format_version": manifest.format_version, "cluster": manifest.cluster,
           "snapshots": [dataclasses.asdict(s) for s in manifest.snapshots]}
    return json.dumps(doc, indent=1, sort_keys=True, allow_nan=False).encode()


def decode_manifest(data: bytes, *, source: str) -> Manifest:
    """Parse and check a manifest; raise CorruptDataError naming the failed check."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise CorruptDataError(f"{source}: manifest is not valid JSON ({exc}); it is corrupt "
                               "or was written by another program") from None
    if not isinstance(doc, dict):
        raise CorruptDataError(f"{source}: manifest is not a JSON object")
    version = _checked(doc, "format_version", int, source)
    if version != MANIFEST_FORMAT_VERSION:
        raise CorruptDataError(f"{source}: manifest format version {version!r} is not "
                               f"supported (this hastate reads {MANIFEST_FORMAT_VERSION}); "
                               "upgrade hastate")
    cluster = _checked(doc, "cluster", str, source)
    entries = _checked(doc, "snapshots", list, source)
    snapshots = []
    for i, entry in enumerate(entries):
        where = f"{source} (snapshots[{i}])"
        if not isinstance(entry, dict) or set(entry) != set(_ENTRY_TYPES):
            raise CorruptDataError(f"{where}: manifest entry must have exactly the fields "
                                   f"{sorted(_ENTRY_TYPES)}")
        meta = SnapshotMeta(**{k: _checked(entry, k, t, where) for k, t in _ENTRY_TYPES.items()})
        if parse_snapshot_name(meta.name) != (meta.index, meta.term):
            raise CorruptDataError(f"{where}: entry name {meta.name!r} does not match its "
                                   f"index {meta.index} and term {meta.term}")
        snapshots.append(meta)
    return Manifest(cluster=cluster, snapshots=tuple(snapshots), format_version=version)


def _checked(doc: dict[str, Any], key: str, types: type | tuple[type, ...],
             source: str) -> Any:
    """Return ``doc[key]`` if it has one of ``types`` (bools are not ints here)."""
    value = doc.get(key)
    if not isinstance(value, types) or isinstance(value, bool):
        raise CorruptDataError(f"{source}: manifest field {key!r} is missing or has the "
                               f"wrong type ({value!r})")
    return value


# --- manifest compare-and-set ---------------------------------------------------------

def read_manifest(store: SnapshotStore) -> tuple[Manifest | None, int]:
    """Return the manifest (None if absent) and the generation a rewrite must match.

    The generation is listed before the content is read, so the content is at least that
    new: a write conditioned on it fails if anything changed in between.
    """
    infos = [i for i in store.list(MANIFEST_NAME) if i.name == MANIFEST_NAME]
    if not infos:
        return None, 0
    try:
        data = store.read(MANIFEST_NAME)
    except SnapshotNotFoundError:
        return None, infos[0].generation
    return decode_manifest(data, source=location(store, MANIFEST_NAME)), infos[0].generation


def write_manifest(store: SnapshotStore, manifest: Manifest, *, generation: int) -> int:
    """Write ``manifest`` only if the stored one is still at ``generation`` (0: absent)."""
    return store.write(MANIFEST_NAME, encode_manifest(manifest), if_generation_match=generation)


def update_manifest(store: SnapshotStore, cluster: str,
                    change: Callable[[Manifest], Manifest], *,
                    attempts: int = MANIFEST_ATTEMPTS) -> Manifest:
    """Apply ``change`` to the current manifest with compare-and-set, re-reading on conflict.

    ``change`` must be a pure function of the manifest it is given: it is re-run on the
    fresh manifest after every lost race. Returns the manifest as written.
    """
    where = location(store, MANIFEST_NAME)
    for attempt in range(1, attempts + 1):
        current, generation = _read_own_manifest(store, cluster)
        base = current or Manifest(cluster=cluster)
        updated = change(base)
        if current is not None and updated == current:
            return current
        try:
            write_manifest(store, updated, generation=generation)
        except PreconditionFailed:
            logger.info("%s changed while being updated (attempt %d/%d); re-reading", where,
                        attempt, attempts)
            continue
        return updated
    raise SnapshotError(f"{where}: still changing after {attempts} compare-and-set attempts; "
                        "several nodes are writing it at once; retry later")


def _read_own_manifest(store: SnapshotStore, cluster: str) -> tuple[Manifest | None, int]:
    """read_manifest, refusing a manifest that belongs to another cluster."""
    manifest, generation = read_manifest(store)
    if manifest is not None and manifest.cluster != cluster:
        raise CorruptDataError(f"{location(store, MANIFEST_NAME)}: belongs to cluster "
                               f"{manifest.cluster!r}, not {cluster!r}; give each cluster its "
                               "own store prefix")
    return manifest, generation


def _listed(snapshots: Iterable[SnapshotMeta], name: str) -> SnapshotMeta | None:
    """The manifest entry named ``name``, if any."""
    return next((s for s in snapshots if s.name == name), None)


def _refuse_stale(manifest: Manifest, name: str, index: int) -> None:
    """Raise StaleSnapshotError unless ``index`` is newer than every listed snapshot."""
    newest = manifest.newest
    if newest is not None and index <= newest.index:
        raise StaleSnapshotError(name, newest)


def _add_entry(meta: SnapshotMeta) -> Callable[[Manifest], Manifest]:
    """Manifest change that lists ``meta`` first (no-op if listed, refused if stale)."""
    def change(manifest: Manifest) -> Manifest:
        if _listed(manifest.snapshots, meta.name) is not None:
            return manifest
        _refuse_stale(manifest, meta.name, meta.index)
        return dataclasses.replace(manifest, snapshots=(meta, *manifest.snapshots))
    return change


# --- snapshots ------------------------------------------------------------------------

def _meta_of(name: str, header: DumpHeader, blob: bytes) -> SnapshotMeta:
    """Manifest entry describing the snapshot object ``blob`` with dump header ``header``."""
    return SnapshotMeta(name=name, cluster=header.cluster, index=header.index, term=header.term,
                        created_at=header.created_at, format_version=header.format_version,
                        size=len(blob), sha256=hashlib.sha256(blob).hexdigest(),
                        keys=header.keys)


def write_snapshot(store: SnapshotStore, body: dict[str, Any], *, cluster: str, index: int,
                   term: int, keys: int, extra: dict[str, Any] | None = None) -> SnapshotMeta:
    """Upload the state ``body`` at ``(index, term)`` and list it first in the manifest.

    Idempotent: if the object already exists (a retried upload, or another node at the same
    position), the stored one is verified and listed instead. Raises StaleSnapshotError,
    without leaving an object behind, if the manifest already lists a snapshot at ``index``
    or later.
    """
    name = snapshot_name(index, term)
    where = location(store, name)
    manifest, _ = _read_own_manifest(store, cluster)
    if manifest is not None:
        listed = _listed(manifest.snapshots, name)
        if listed is not None:
            logger.info("%s is already uploaded and listed", where)
            return listed
        _refuse_stale(manifest, name, index)
    header, blob = encode_dump(body, cluster=cluster, index=index, term=term, keys=keys,
                               extra=extra)
    uploaded = True
    try:
        store.write(name, blob, if_generation_match=0)
    except PreconditionFailed:
        uploaded = False
        blob = store.read(name)
        header, _ = decode_dump(blob, source=where, cluster=cluster)
        logger.info("%s already exists (a retried or concurrent upload); listing the stored "
                    "copy", where)
    meta = _meta_of(name, header, blob)
    try:
        update_manifest(store, cluster, _add_entry(meta))
    except StaleSnapshotError:
        if uploaded:
            _delete_quietly(store, name)
        raise
    logger.info("snapshot %s listed: index %d, term %d, %d keys, %d bytes", where, index,
                term, keys, meta.size)
    return meta


def list_snapshots(store: SnapshotStore) -> list[SnapshotMeta]:
    """Snapshots the manifest lists, newest first (empty when there is no manifest)."""
    manifest, _ = read_manifest(store)
    return list(manifest.snapshots) if manifest else []


def latest(store: SnapshotStore) -> SnapshotMeta:
    """The newest listed snapshot; SnapshotNotFoundError when there is none."""
    snapshots = list_snapshots(store)
    if not snapshots:
        raise SnapshotNotFoundError(f"{location(store, MANIFEST_NAME)}: no snapshot listed; "
                                    "check the store URL, or nothing was uploaded yet")
    return snapshots[0]


def load(store: SnapshotStore, *, cluster: str,
         name: str | None = None) -> tuple[SnapshotMeta, dict[str, Any]]:
    """Download, verify and decode snapshot ``name`` (default: the newest listed one).

    Checks, in order: listed in the manifest, object present, size and SHA-256 as the
    manifest says, the dump's own header checksum, cluster, payload size and SHA-256, and
    that the dump header agrees with the manifest entry. Raises CorruptDataError naming the
    object and the failed check, or SnapshotNotFoundError.
    """
    if name is None:
        entry = latest(store)
    else:
        found = _listed(list_snapshots(store), name)
        if found is None:
            raise SnapshotNotFoundError(f"{location(store, name)}: not listed in "
                                        f"{MANIFEST_NAME}; list the snapshots and pick one")
        entry = found
    name = entry.name
    where = location(store, name)
    try:
        blob = store.read(name)
    except SnapshotNotFoundError:
        raise SnapshotNotFoundError(f"{where}: listed in {MANIFEST_NAME} but the object is "
                                    "missing (deleted by hand?); use an older snapshot") from None
    if len(blob) != entry.size:
        raise CorruptDataError(f"{where}: size check failed: manifest says {entry.size} bytes, "
                               f"object has {len(blob)}; it is truncated or was overwritten")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry.sha256:
        raise CorruptDataError(f"{where}: SHA-256 check failed: manifest says {entry.sha256}, "
                               f"object has {digest}; the object is corrupt")
    header, body = decode_dump(blob, source=where, cluster=cluster)
    described = dataclasses.asdict(_meta_of(name, header, blob))
    differences = [f"{k}: manifest {v!r}, object {described[k]!r}"
                   for k, v in dataclasses.asdict(entry).items() if described[k] != v]
    if differences:
        raise CorruptDataError(f"{where}: manifest agreement check failed ("
                               f"{'; '.join(differences)}); the manifest or object was edited")
    return entry, body


def verify(store: SnapshotStore, name: str, cluster: str) -> SnapshotMeta:
    """Fully check snapshot ``name`` (see :func:`load`) and return its manifest entry."""
    return load(store, cluster=cluster, name=name)[0]


# --- retention ------------------------------------------------------------------------

def prune(store: SnapshotStore, keep: int) -> list[str]:
    """Keep the ``keep`` newest listed snapshots; delete older ones, orphans and segments.

    The manifest is shortened first, then objects are deleted, so a crash in between only
    leaves orphans for the next run. Orphans newer than the oldest kept snapshot are left
    alone: they may be uploads whose manifest update is in flight. Returns deleted names.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (got {keep}): pruning every snapshot would "
                         "leave nothing to restore")
    manifest, _ = read_manifest(store)
    if manifest is None:
        return []
    updated = update_manifest(store, manifest.cluster, lambda m: dataclasses.replace(
        m, snapshots=m.snapshots[:keep]))
    if not updated.snapshots:
        return []
    kept = {s.name for s in updated.snapshots}
    oldest = updated.snapshots[-1].index
    deleted = []
    for info in store.list(SNAPSHOT_PREFIX):
        position = parse_snapshot_name(info.name)
        if position is not None and position[0] < oldest and info.name not in kept \
                and _delete_quietly(store, info.name):
            deleted.append(info.name)
    deleted += prune_segments(store, oldest)
    if deleted:
        logger.info("pruned %d objects from %s, keeping %d snapshots down to index %d",
                    len(deleted), store, len(kept), oldest)
    return deleted


def prune_segments(store: SnapshotStore, upto_index: int) -> list[str]:
    """Delete log segments whose entries all lie at or below ``upto_index``.

    Call it with the index of the oldest kept snapshot: those entries are inside every
    kept snapshot, so a restore never needs them. Returns the deleted names.
    """
    deleted = []
    for info in store.list(SEGMENT_PREFIX):
        span = parse_segment_name(info.name)
        if span is not None and span[1] <= upto_index and _delete_quietly(store, info.name):
            deleted.append(info.name)
    return deleted


def _delete_quietly(store: SnapshotStore, name: str) -> bool:
    """Delete ``name``; return False if it was already gone (a concurrent prune)."""
    try:
        store.delete(name)
    except SnapshotNotFoundError:
        logger.debug("%s already deleted", location(store, name))
        return False
    return True
