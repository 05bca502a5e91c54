"""Disaster recovery across clouds: the leader mirrors to S3 or Azure, restore works from there.

Real node processes, a primary store on disk, a mirror on moto's S3 server or Azurite, and a
second mirror whose endpoint is dead: it must fail visibly without holding anything up.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dr_harness import DRCluster, restore
from store_servers import cloud_store_url, free_port, open_test_url

from hastate.config import load_config
from hastate.consensus.seed import is_empty
from hastate.observability.metrics import NodeMetrics
from hastate.snapshots import list_snapshots
from hastate.snapshots.segments import list_segments
from hastate.testing import LocalCluster, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", [pytest.param("s3", marks=pytest.mark.s3),
                                     pytest.param("azure", marks=pytest.mark.azure)])
def test_restore_from_a_mirror_in_another_cloud(request: pytest.FixtureRequest, backend: str,
                                                tmp_path: Path) -> None:
    """Mirror gets snapshots and segments; restoring from it gives the same state hash."""
    mirror_url = cloud_store_url(request, backend)
    dead_url = f"s3://dead-bucket/dr?endpoint_url=http://127.0.0.1:{free_port()}"
    primary_url = f"file://{tmp_path}/primary"
    mirror, primary = open_test_url(mirror_url), open_test_url(primary_url)
    dr = DRCluster(tmp_path / "live", 3, name="dr", snapshot_store=primary_url,
                   snapshot_mirrors=(mirror_url, dead_url), snapshot_interval=0.5,
                   ship_interval=0.2)
    try:
        dr.boot()
        dr.sm.trigger_failover("instance-1", timeout=15)
        dr.sm.save_state({"base": True})
        base = dr.sm.machine.applied_index
        wait_for(lambda: list_snapshots(mirror) and list_snapshots(mirror)[0].index >= base,
                 timeout=30)
        for i in range(30):
            dr.sm.save_state({f"k{i}": i, "last": i}, timeout=5)
        final_hash, final_index = dr.sm.machine.state_hash(), dr.sm.machine.applied_index
        for store in (primary, mirror):
            wait_for(lambda s=store: any(last >= final_index for _, last, _ in list_segments(s))
                     or list_snapshots(s)[0].index >= final_index, timeout=30)
        status = dr.sm.status()["snapshots"]
        assert [m["store"] for m in status["mirrors"]] == [str(mirror), "s3://dead-bucket/dr"]
        wait_for(lambda: dr.sm.status()["snapshots"]["mirrors"][1]["failures_total"] >= 1,
                 timeout=30)
        dead = dr.sm.status()["snapshots"]["mirrors"][1]
        assert dead["uploads_total"] == 0 and "unreachable" in dead["last_error"]
        assert dr.sm.status()["snapshots"]["failures_total"] == 0   # the primary is fine
        text = NodeMetrics(dr.sm).render().decode()
        failures = re.search(r'hastate_snapshot_mirror_failures_total\{node="instance-1",'
                             r'store="s3://dead-bucket/dr"\} (\S+)', text)
        assert failures is not None and float(failures[1]) >= 1
    finally:
        dr.shutdown()

    fresh = LocalCluster(tmp_path / "restored", 3, name="dr", snapshot_store=primary_url)
    out = restore(fresh.config_path, "--store", mirror_url, "--json")
    assert out.returncode == 0, out.stderr
    assert f'"store": "{mirror_url}"' in out.stdout
    with fresh:
        fresh.start_all()
        fresh.wait_ready(timeout=20)
        assert {fresh.state(n)["state_hash"] for n in fresh.ids} == {final_hash}

    newest = list_snapshots(mirror)[0]
    blob = bytearray(mirror.read(newest.name))
    blob[len(blob) // 2] ^= 0xFF
    mirror.write(newest.name, bytes(blob))
    refused = LocalCluster(tmp_path / "refused", 3, name="dr", snapshot_store=primary_url)
    out = restore(refused.config_path, "--store", mirror_url, "--snapshot", newest.name)
    assert out.returncode == 1, out.stderr
    assert newest.name in out.stderr and "SHA-256 check failed" in out.stderr
    assert all(is_empty(n.data_dir) for n in load_config(refused.config_path).nodes)
