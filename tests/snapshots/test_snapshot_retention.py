"""Retention: prune snapshots beyond ``keep``, orphans behind them, and covered log segments."""

from __future__ import annotations

import pytest

from hastate.snapshots.format import (
    list_snapshots,
    prune,
    prune_segments,
    segment_name,
    snapshot_name,
    write_snapshot,
)
from hastate.snapshots.store import SnapshotStore
from hastate.snapshots.stores.memory import MemoryStore
from hastate.state.dump import encode_dump


def _put(store: SnapshotStore, index: int) -> str:
    """Upload a small snapshot at ``index``; return its name."""
    return write_snapshot(store, {"i": index}, cluster="alpha", index=index, term=1,
                          keys=1).name


def _names(store: SnapshotStore, prefix: str) -> list[str]:
    """Names of the objects under ``prefix``."""
    return [i.name for i in store.list(prefix)]


def test_prune_keeps_the_newest_and_deletes_the_rest(store: SnapshotStore) -> None:
    """keep=2 of 5: the manifest lists the two newest and only their objects remain."""
    names = [_put(store, index) for index in (10, 20, 30, 40, 50)]
    deleted = prune(store, 2)
    assert sorted(deleted) == names[:3]
    assert [s.name for s in list_snapshots(store)] == [names[4], names[3]]
    assert _names(store, "snapshots/") == names[3:]


def test_prune_removes_old_orphans_but_not_newer_ones(store: SnapshotStore) -> None:
    """Unlisted objects older than the oldest kept go; newer ones may be in-flight uploads."""
    for index in (10, 20):
        _put(store, index)
    for index in (5, 99):
        _, blob = encode_dump({}, cluster="alpha", index=index, term=1, keys=0)
        store.write(snapshot_name(index, 1), blob)
    store.write("snapshots/README", b"not a snapshot")
    deleted = prune(store, 2)
    assert deleted == [snapshot_name(5, 1)]
    assert _names(store, "snapshots/") == [snapshot_name(10, 1), snapshot_name(20, 1),
                                           snapshot_name(99, 1), "snapshots/README"]


def test_prune_deletes_segments_covered_by_the_oldest_kept_snapshot(
        store: SnapshotStore) -> None:
    """Segments ending at or before the oldest kept snapshot's index are removed."""
    for index in (100, 200, 300):
        _put(store, index)
    for first, last in ((1, 99), (100, 200), (201, 250), (251, 400)):
        store.write(segment_name(first, last), b"entries")
    deleted = prune(store, 2)
    assert set(deleted) == {snapshot_name(100, 1), segment_name(1, 99), segment_name(100, 200)}
    assert _names(store, "segments/") == [segment_name(201, 250), segment_name(251, 400)]


def test_prune_segments_boundary(store: SnapshotStore) -> None:
    """A segment ending exactly at the index goes; one ending one later stays."""
    store.write(segment_name(1, 10), b"x")
    store.write(segment_name(5, 11), b"x")
    store.write("segments/notes.txt", b"x")
    assert prune_segments(store, 10) == [segment_name(1, 10)]
    assert _names(store, "segments/") == [segment_name(5, 11), "segments/notes.txt"]


def test_prune_without_manifest_deletes_nothing(store: SnapshotStore) -> None:
    """With no manifest nothing can be judged old, so nothing is deleted."""
    _, blob = encode_dump({}, cluster="alpha", index=1, term=1, keys=0)
    store.write(snapshot_name(1, 1), blob)
    assert prune(store, 1) == []
    assert _names(store, "") == [snapshot_name(1, 1)]


def test_prune_is_idempotent(store: SnapshotStore) -> None:
    """A second prune with the same keep finds nothing more to delete."""
    for index in (1, 2, 3):
        _put(store, index)
    assert len(prune(store, 1)) == 2
    assert prune(store, 1) == []
    assert [s.index for s in list_snapshots(store)] == [3]


def test_keep_must_be_positive() -> None:
    """keep=0 would delete every snapshot: refused."""
    with pytest.raises(ValueError, match="keep must be >= 1"):
        prune(MemoryStore(), 0)
