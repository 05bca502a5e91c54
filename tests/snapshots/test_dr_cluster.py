"""Disaster recovery end to end: real node processes, a real store (directory or GCS emulator)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Iterator

import pytest
from dr_harness import DRCluster, restore

from hastate.consensus.seed import is_empty
from hastate.snapshots import list_snapshots
from hastate.snapshots.segments import list_segments
from hastate.testing import LocalCluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=["file", pytest.param("gcs", marks=pytest.mark.gcs)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/store"
    return f"gs://{request.getfixturevalue('gcs_bucket')}/dr"


@pytest.fixture
def dr(tmp_path: Path, store_url: str) -> Iterator[DRCluster]:
    cluster = DRCluster(tmp_path / "live", 3, name="dr", snapshot_store=store_url,
                        snapshot_interval=0.5, snapshot_keep=3, ship_interval=0.2)
    try:
        yield cluster.boot()
    finally:
        cluster.shutdown()


def write_rounds_each_snapshotted(dr: DRCluster, store, rounds: int) -> None:
    """Write ``rounds`` times, waiting each time until a snapshot at that index is listed."""
    for round_ in range(rounds):
        dr.sm.save_state({"round": round_})
        index = dr.sm.machine.applied_index
        wait_for(lambda: list_snapshots(store) and list_snapshots(store)[0].index >= index)


def test_only_the_leader_uploads_and_a_new_leader_takes_over(dr: DRCluster, store_url: str, open_test_store) -> None:
    def uploads() -> dict[str, int]:
        remote = {n: dr.status(n)["snapshots"]["uploads_total"] for n in ("instance-2",
                                                                           "instance-3")}
        return {"instance-1": dr.sm.status()["snapshots"]["uploads_total"], **remote}

    dr.sm.trigger_failover("instance-2", timeout=15)
    before = uploads()
    for i in range(30):
        dr.sm.save_state({f"a{i}": i})
    target = dr.sm.machine.applied_index
    store = open_test_store(store_url)
    wait_for(lambda: list_snapshots(store) and list_snapshots(store)[0].index >= target)
    # the snapshot is listed a moment before the uploader counts it: wait for the count
    after = wait_for(lambda: (lambda u: u if u["instance-2"] > before["instance-2"] else None)(
        uploads()), what="the leader's upload counted")             # the leader uploads ...
    assert after["instance-1"] == before["instance-1"]          # ... the followers do not
    assert after["instance-3"] == before["instance-3"]
    dr.kill("instance-2", signal.SIGKILL)
    wait_for(lambda: dr.sm.leader() in ("instance-1", "instance-3") and
             (dr.sm.is_leader() or (dr.status("instance-3") or {}).get("is_leader")))
    for i in range(10):
        dr.sm.save_state({f"b{i}": i})
    target = dr.sm.machine.applied_index
    wait_for(lambda: list_snapshots(store)[0].index >= target)
    new_leader = dr.sm.leader()

    def new_leader_uploads() -> int:
        took_over = dr.sm.status() if new_leader == "instance-1" else dr.status("instance-3")
        return took_over["snapshots"]["uploads_total"]

    # the uploader counts an upload just after the manifest lists it: wait for the count
    wait_for(lambda: new_leader_uploads() >= 1, what=f"{new_leader}'s upload counted")


def test_unchanged_state_is_not_uploaded_again_and_retention_keeps_n(dr: DRCluster,
                                                                     store_url: str, open_test_store) -> None:
    store = open_test_store(store_url)
    write_rounds_each_snapshotted(dr, store, 5)
    # retention runs after each upload: the manifest and the objects settle at keep=3
    wait_for(lambda: len(list_snapshots(store)) == 3 and len(store.list("snapshots/")) == 3)
    listed = [s.name for s in list_snapshots(store)]
    time.sleep(1.5)                                    # three intervals without a write
    assert [s.name for s in list_snapshots(store)] == listed
    assert sorted(o.name for o in store.list("snapshots/")) == sorted(listed)
    assert list_snapshots(store)[0].index == dr.sm.machine.applied_index


def test_restore_whole_cluster_and_point_in_time(dr: DRCluster, store_url: str,
                                                 tmp_path: Path, open_test_store) -> None:
    store = open_test_store(store_url)
    dr.sm.save_state({"base": True})
    base = dr.sm.machine.applied_index
    wait_for(lambda: list_snapshots(store) and list_snapshots(store)[0].index >= base)
    for i in range(40):
        dr.sm.save_state({f"k{i}": i, "last": i})
    midpoint = dr.sm.machine.applied_index
    mid_state = dr.sm.get_state()
    for i in range(40, 60):
        dr.sm.save_state({f"k{i}": i, "last": i})
    final_hash, final_index = dr.sm.machine.state_hash(), dr.sm.machine.applied_index
    wait_for(lambda: any(last >= final_index for _, last, _ in list_segments(store)) or
             (list_snapshots(store) and list_snapshots(store)[0].index >= final_index))
    dr.shutdown()

    fresh = LocalCluster(tmp_path / "restored", 3, name="dr", snapshot_store=store_url)
    out = restore(fresh.config_path, "--json")
    assert out.returncode == 0, out.stderr
    with fresh:
        fresh.start_all()
        fresh.wait_ready(timeout=20)
        states = [fresh.state(n) for n in fresh.ids]
        assert {s["state_hash"] for s in states} == {final_hash}

    pitr = LocalCluster(tmp_path / "pitr", 3, name="dr", snapshot_store=store_url)
    out = restore(pitr.config_path, "--index", str(midpoint), "--id", "instance-1")
    assert out.returncode == 0, out.stderr
    from hastate.snapshots.restore import rebuild
    rebuilt = rebuild(store, "dr", index=midpoint)
    assert rebuilt.machine.snapshot() == mid_state and rebuilt.index == midpoint


def test_corrupt_snapshot_is_refused_and_fallback_uses_the_previous(dr: DRCluster,
                                                                   store_url: str,
                                                                   tmp_path: Path, open_test_store) -> None:
    store = open_test_store(store_url)
    write_rounds_each_snapshotted(dr, store, 2)
    dr.shutdown()
    newest = list_snapshots(store)[0]
    blob = bytearray(store.read(newest.name))
    blob[len(blob) // 2] ^= 0xFF
    store.write(newest.name, bytes(blob))

    fresh = LocalCluster(tmp_path / "restored", 3, name="dr", snapshot_store=store_url)
    out = restore(fresh.config_path, "--snapshot", newest.name)
    assert out.returncode == 1
    assert newest.name in out.stderr and "SHA-256" in out.stderr and "--fallback" in out.stderr
    assert all(is_empty(n.data_dir) for n in [fresh_node for fresh_node in _nodes(fresh)])
    out = restore(fresh.config_path, "--snapshot", newest.name, "--fallback", "--json")
    assert out.returncode == 0, out.stderr
    assert newest.name in out.stdout and '"refused_snapshots"' in out.stdout

    other = LocalCluster(tmp_path / "other", 3, name="not-dr", snapshot_store=store_url)
    out = restore(other.config_path, "--fallback")
    assert out.returncode == 1 and "belongs to cluster 'dr'" in out.stderr
    out = restore(fresh.config_path)                      # data dirs are no longer empty
    assert out.returncode == 2 and "never overwrites" in out.stderr


def _nodes(cluster: LocalCluster):
    from hastate.config import load_config
    return load_config(cluster.config_path).nodes


@pytest.mark.gcs
def test_store_outage_does_not_slow_writes_and_uploads_recover(tmp_path: Path, restartable_gcs,
                                                               open_test_store) -> None:
    bucket = restartable_gcs.create_bucket()
    url = f"gs://{bucket}/dr?retry_deadline=3"
    cluster = DRCluster(tmp_path, 3, name="dr", snapshot_store=url, snapshot_interval=0.3,
                        ship_interval=0.2)
    try:
        cluster.boot()
        cluster.sm.trigger_failover("instance-1", timeout=15)
        cluster.sm.save_state({"before": 1})
        wait_for(lambda: cluster.sm.status()["snapshots"]["uploads_total"] >= 1)
        restartable_gcs.stop()
        for i in range(50):                            # writes keep working with the store down
            cluster.sm.save_state({f"down{i}": i}, timeout=5)
        # the client retries for the URL's 3 s deadline before an attempt counts as failed
        wait_for(lambda: cluster.sm.status()["snapshots"]["failures_total"] >= 1, timeout=45)
        assert cluster.sm.status()["snapshots"]["last_error"]
        uploads = cluster.sm.status()["snapshots"]["uploads_total"]
        restartable_gcs.start()
        cluster.sm.save_state({"after": 1})
        wait_for(lambda: cluster.sm.status()["snapshots"]["uploads_total"] > uploads, timeout=60)
        newest = list_snapshots(open_test_store(url))[0]
        assert newest.index >= cluster.sm.machine.applied_index - 1
    finally:
        cluster.shutdown()
