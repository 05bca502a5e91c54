"""Two nodes that both believe they lead must never overwrite each other's newer manifest."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from store_servers import cloud_store_url, open_test_url

from hastate.snapshots.format import (
    Manifest,
    SnapshotMeta,
    StaleSnapshotError,
    list_snapshots,
    read_manifest,
    snapshot_name,
    update_manifest,
    write_manifest,
    write_snapshot,
)
from hastate.snapshots.store import PreconditionFailed, SnapshotStore


def _entry(index: int, cluster: str = "alpha") -> SnapshotMeta:
    """A manifest entry at ``index`` (no object behind it: the manifest is what is raced)."""
    return SnapshotMeta(name=snapshot_name(index, 1), cluster=cluster, index=index, term=1,
                        created_at=float(index), format_version=1, size=1, sha256="0" * 64,
                        keys=0)


def _with(manifest: Manifest, index: int) -> Manifest:
    """``manifest`` with an entry at ``index`` added, newest first."""
    entries = sorted((*manifest.snapshots, _entry(index)), key=lambda s: -s.index)
    return dataclasses.replace(manifest, snapshots=tuple(entries))


def test_stale_writer_gets_precondition_failed_and_newer_manifest_survives(
        store: SnapshotStore) -> None:
    """Both read generation G; the newer leader writes first; the old one's write is refused."""
    write_snapshot(store, {"k": 1}, cluster="alpha", index=10, term=1, keys=1)
    old_view, old_generation = read_manifest(store)
    new_view, new_generation = read_manifest(store)
    assert old_view is not None and new_view is not None
    assert old_generation == new_generation
    newer = _with(new_view, 20)
    write_manifest(store, newer, generation=new_generation)
    with pytest.raises(PreconditionFailed, match="manifest.json: precondition failed"):
        write_manifest(store, Manifest(cluster="alpha"), generation=old_generation)
    assert read_manifest(store)[0] == newer


def test_first_manifest_is_created_only_once(store: SnapshotStore) -> None:
    """Two writers creating the first manifest (generation 0): only one wins."""
    write_manifest(store, _with(Manifest(cluster="alpha"), 5), generation=0)
    with pytest.raises(PreconditionFailed):
        write_manifest(store, _with(Manifest(cluster="alpha"), 3), generation=0)
    assert [s.index for s in list_snapshots(store)] == [5]


def test_update_that_loses_the_race_is_reapplied_to_the_fresh_manifest(
        store: SnapshotStore) -> None:
    """update_manifest re-runs the change on the winner's manifest instead of overwriting it."""
    calls: list[tuple[int, ...]] = []

    def slow_change(manifest: Manifest) -> Manifest:
        calls.append(tuple(s.index for s in manifest.snapshots))
        if len(calls) == 1:
            update_manifest(store, "alpha", lambda m: _with(m, 2))
        return _with(manifest, 1)

    result = update_manifest(store, "alpha", slow_change)
    assert calls == [(), (2,)]
    assert [s.index for s in result.snapshots] == [2, 1]
    assert read_manifest(store)[0] == result


def test_deposed_leader_cannot_add_an_older_snapshot(store: SnapshotStore) -> None:
    """After the new leader listed index 20, the old leader's index 15 is refused."""
    write_snapshot(store, {"k": 1}, cluster="alpha", index=10, term=1, keys=1)
    newer = write_snapshot(store, {"k": 2}, cluster="alpha", index=20, term=2, keys=1)
    with pytest.raises(StaleSnapshotError):
        write_snapshot(store, {"k": 9}, cluster="alpha", index=15, term=1, keys=1)
    assert list_snapshots(store)[0] == newer
    assert snapshot_name(15, 1) not in [i.name for i in store.list("snapshots/")]


def test_concurrent_updates_lose_nothing(store: SnapshotStore) -> None:
    """Threads racing compare-and-set updates all land: no update is lost."""
    workers, per_worker = 3, 4
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(per_worker):
                update_manifest(store, "alpha", lambda m, n=worker * 100 + i: _with(m, n),
                                attempts=50)
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    expected = sorted((w * 100 + i for w in range(workers) for i in range(per_worker)),
                      reverse=True)
    assert [s.index for s in list_snapshots(store)] == expected


@pytest.mark.parametrize("backend", ["file", pytest.param("gcs", marks=pytest.mark.gcs),
                                     pytest.param("s3", marks=pytest.mark.s3),
                                     pytest.param("azure", marks=pytest.mark.azure)])
def test_two_uploaders_with_their_own_clients_race_and_exactly_one_wins(
        request: pytest.FixtureRequest, tmp_path, backend: str) -> None:
    """Two store handles (two clients, as on two nodes) create the manifest at the same moment."""
    url = f"file://{tmp_path}/store" if backend == "file" else cloud_store_url(request, backend)
    handles = [open_test_url(url), open_test_url(url)]
    for handle in handles:
        handle.init()
    start = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def upload(i: int) -> None:
        start.wait()
        try:
            write_manifest(handles[i], _with(Manifest(cluster="alpha"), 10 + i), generation=0)
            outcomes[i] = "won"
        except PreconditionFailed:
            outcomes[i] = "lost"

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes.values()) == ["lost", "won"]
    winner = next(i for i, outcome in outcomes.items() if outcome == "won")
    assert [s.index for s in list_snapshots(handles[1 - winner])] == [10 + winner]
