"""`hastate leases list|revoke` and the lease metrics against real node processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from hastate.cli.exit import Exit
from hastate.testing import wait_for
from hastate.testing.embedded import EmbeddedCluster
from hastate.testing.metrics import sample

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path, 3, name="leasecli").running() as c:
        yield c


def test_list_revoke_and_metrics(cluster) -> None:
    sm = cluster.sm
    lease = sm.grant_lease(60)
    sm.save_state({"inflight/a": 1, "inflight/b": 2}, lease=lease)
    config = str(cluster.config_path)
    listed = cluster.cli("leases", "list", "--config", config, "--json")
    assert listed.returncode == Exit.OK, listed.stderr
    rows = json.loads(listed.stdout)["leases"]
    assert [(r["id"], r["ttl"], r["keys"]) for r in rows] == \
        [(lease.id, 60.0, ["inflight/a", "inflight/b"])]
    assert json.loads(listed.stdout)["leader"] is True and 0 < rows[0]["expires_in"] <= 60
    text = cluster.cli("leases", "list", "--config", config)
    assert str(lease.id) in text.stdout and "inflight/a, inflight/b" in text.stdout
    wait_for(lambda: sample(cluster.scrape("instance-2"), "hastate_leases",
                            node="instance-2") == 1.0)

    revoked = cluster.cli("leases", "revoke", str(lease.id), "--config", config)
    assert revoked.returncode == Exit.OK, revoked.stderr
    assert sm.get_state() == {} and sm.leases() == {}
    again = cluster.cli("leases", "revoke", str(lease.id), "--config", config)
    assert again.returncode == Exit.NOT_FOUND and "already ended" in again.stderr
    refused = cluster.cli("leases", "list", "--config", config, token="wrong")
    assert refused.returncode == Exit.UNAUTHORIZED

    # /v1/txn puts take a lease too
    lease = sm.grant_lease(60)
    code, reply = cluster.post("instance-3", "/v1/txn", {"success": [
        {"op": "put", "key": "http/k", "value": 1, "lease": lease.id}]})
    assert code == 200 and reply["succeeded"], reply
    wait_for(lambda: sm.machine.lease_of("http/k") == lease.id)
    code, reply = cluster.post("instance-3", "/v1/txn", {"success": [
        {"op": "put", "key": "http/k", "value": 1, "lease": "soon"}]})
    assert code == 400 and "lease" in reply["error"]
    lease.revoke()
    code, reply = cluster.post("instance-3", "/v1/txn", {"success": [
        {"op": "put", "key": "http/k", "value": 1, "lease": lease.id}]})
    assert code == 409 and "has ended" in reply["error"]

    sm.save_state({"ttl/x": 1}, ttl=0.5)
    for node in ("instance-1", "instance-2", "instance-3"):
        wait_for(lambda node=node: sample(cluster.scrape(node), "hastate_lease_expiries_total",
                                          node=node) == 1.0, timeout=20)
        assert sample(cluster.scrape(node), "hastate_leases", node=node) == 0.0
