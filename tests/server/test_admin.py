"""Admin HTTP endpoints: a missing or wrong token gets 401 and changes nothing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from hastate.testing.embedded import EmbeddedCluster

pytestmark = pytest.mark.integration


def request(http: str, path: str, *, method: str = "POST", body: bytes | None = b"{}",
            headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{http}{path}", data=body if method == "POST" else None,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_admin_actions_without_or_with_a_wrong_token_are_refused_and_do_nothing(
        ops: EmbeddedCluster) -> None:
    leader = ops.wait_leader()
    target = next(n for n in ops.ids if n != leader)
    term = ops.status(leader)["term"]
    uploads = ops.status(leader)["snapshots"]["uploads_total"]
    transfer = json.dumps({"to": target}).encode()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ops.admin_token},
                    {"Authorization": f"Bearer {ops.admin_token}x"}):
        for path, body in (("/admin/transfer-leadership", transfer), ("/admin/snapshot", b"{}")):
            code, answer = request(ops.http[leader], path, body=body, headers=headers)
            assert code == 401, (path, headers, answer)
            assert "token" in answer["error"]
        code, _ = request(ops.http[leader], "/state", method="GET", headers=headers)
        assert code == 401
    time.sleep(1.0)           # a transfer, had one started, completes well within this
    assert ops.leader() == leader and ops.status(leader)["term"] == term
    assert ops.status(leader)["snapshots"]["uploads_total"] == uploads


def test_admin_snapshot_with_token_on_leader_and_follower(ops: EmbeddedCluster) -> None:
    ops.sm.save_state({"snap": 1})
    leader = ops.wait_leader()
    follower = next(n for n in ops.ids if n != leader)
    code, answer = ops.post(leader, "/admin/snapshot", {})
    assert code == 200, answer
    assert answer["index"] >= 1 and answer["size"] > 0
    assert ops.status(leader)["snapshots"]["last_index"] == answer["index"]
    code, answer = ops.post(follower, "/admin/snapshot", {})
    assert code == 409 and "leader" in answer["error"]


def test_admin_bad_requests_say_what_is_wrong(ops: EmbeddedCluster) -> None:
    leader = ops.wait_leader()
    auth = {"Authorization": f"Bearer {ops.admin_token}"}
    code, answer = request(ops.http[leader], "/admin/transfer-leadership", body=b"[1]",
                           headers=auth)
    assert code == 400 and "JSON object" in answer["error"]
    code, answer = request(ops.http[leader], "/admin/transfer-leadership", body=b"{}",
                           headers=auth)
    assert code == 400 and "to" in answer["error"]
    code, answer = ops.post(leader, "/admin/transfer-leadership", {"to": "instance-9"})
    assert code == 409 and "unknown instance" in answer["error"]
    code, answer = ops.post(leader, "/admin/nothing", {})
    assert code == 404


def test_admin_snapshot_without_snapshot_store_is_501_not_faked(
        plain_cluster: EmbeddedCluster) -> None:
    leader = plain_cluster.wait_leader()
    code, answer = plain_cluster.post(leader, "/admin/snapshot", {}, token="nope")
    assert code == 401
    code, answer = plain_cluster.post(leader, "/admin/snapshot", {})
    assert code == 501 and "no snapshot provider" in answer["error"]
    assert plain_cluster.status(leader)["snapshots"] is None
