"""``/v1/watch`` (Server-Sent Events) and ``/v1/txn`` against three real node processes."""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from hastate.testing import LocalCluster, wait_for
from hastate.testing.sse import SSE

pytestmark = pytest.mark.integration


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path, 3, name="v1api").processes_running(30) as cluster:
        yield cluster


def put_txn(cluster: LocalCluster, node_id: str, key: str, value: Any) -> int:
    code, reply = cluster.post(node_id, "/v1/txn",
                               {"success": [{"op": "put", "key": key, "value": value}]})
    assert code == 200 and reply["succeeded"], reply
    return reply["revision"]


def test_sse_watch_on_a_follower_resumes_after_that_node_is_killed_and_restarted(
        nodes: LocalCluster) -> None:
    leader = nodes.wait_leader(30)
    watched, writer = [n for n in nodes.ids if n != leader]
    stream = SSE(nodes, watched, "prefix=k/&start_revision=1&prev_value=1")
    assert stream.response.status == 200
    for i in range(30):
        put_txn(nodes, leader, f"k/{i}", i)
    wait_for(lambda: len(stream.changes()) == 30, timeout=30)
    nodes.kill(watched, signal.SIGKILL)
    assert stream.closed.wait(30)
    last = stream.changes()[-1]["id"]
    for i in range(30, 50):
        put_txn(nodes, writer, f"k/{i}", i)
    nodes.start(watched)
    nodes.wait_ready([watched], timeout=30)
    resumed = SSE(nodes, watched, "prefix=k/", last_event_id=last)
    for i in range(50, 60):
        put_txn(nodes, writer, f"k/{i}", i)
    wait_for(lambda: resumed.changes() and resumed.changes()[-1]["id"] >= 60, timeout=30)
    events = stream.changes() + resumed.changes()
    assert [e["id"] for e in events] == list(range(1, 61))
    assert [(e["key"], e["value"], e["prev_value"]) for e in events] == \
        [(f"k/{i}", i, None) for i in range(60)]
    stream.close()
    resumed.close()


def test_txn_over_http_compares_and_reports_branch_revision_and_gets(
        nodes: LocalCluster) -> None:
    follower = next(n for n in nodes.ids if n != nodes.wait_leader(30))
    rev = put_txn(nodes, follower, "pos/X", {"qty": 2})
    body = {"compare": [{"key": "pos/X", "target": "mod_revision", "operator": "=",
                         "value": rev},
                        {"key": "pnl", "target": "create_revision", "operator": "=", "value": 0}],
            "success": [{"op": "delete", "key": "pos/X"}, {"op": "put", "key": "pnl", "value": 7},
                        {"op": "get_prefix", "prefix": "p"}],
            "failure": [{"op": "get", "key": "pos/X"}]}
    code, reply = nodes.post(follower, "/v1/txn", body)
    assert code == 200, reply
    assert reply["succeeded"] and reply["revision"] == rev + 1
    assert reply["responses"][:2] == [1, None]
    assert [(kv["key"], kv["value"], kv["version"]) for kv in reply["responses"][2]] == \
        [("pnl", 7, 1)]
    code, reply = nodes.post(follower, "/v1/txn", body)
    assert code == 200 and not reply["succeeded"] and reply["responses"] == [None]


def test_bad_requests_are_refused_with_the_reason(nodes: LocalCluster) -> None:
    node = nodes.ids[0]
    code, reply = nodes.post(node, "/v1/txn", {"success": [{"op": "put", "key": "a", "value": 1},
                                                           {"op": "put", "key": "a", "value": 2}]})
    assert code == 400 and "puts 'a' twice" in reply["error"]
    code, reply = nodes.post(node, "/v1/txn", {"success": [{"op": "upsert", "key": "a"}]})
    assert code == 400 and "'upsert' is not one of" in reply["error"]
    code, reply = nodes.post(node, "/v1/txn", {"success": []}, token="wrong")
    assert code == 401
    assert nodes.get(node, "/v1/watch?start_revision=zero") is None      # 400
    host, port = nodes.http[node].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/v1/watch?start_revision=0",
                 headers={"Authorization": f"Bearer {nodes.admin_token}"})
    response = conn.getresponse()
    assert response.status == 400 and b"start_revision must be >= 1" in response.read()
    conn.close()


def test_compacted_start_is_410_and_quiet_streams_get_progress_events(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 3, name="v1small")
    text = cluster.config_path.read_text()
    cluster.config_path.write_text(text.replace("[cluster]\n", "[cluster]\nwatch_history = 3\n", 1))
    with cluster.processes_running(30):
        leader = cluster.wait_leader(30)
        for i in range(10):
            put_txn(cluster, leader, f"k{i}", i)
        host, port = cluster.http[leader].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/v1/watch?start_revision=2",
                     headers={"Authorization": f"Bearer {cluster.admin_token}"})
        response = conn.getresponse()
        assert response.status == 410
        assert json.loads(response.read())["oldest_revision"] == 8
        conn.close()
        stream = SSE(cluster, leader, "prefix=none/&progress_interval=0.2")
        put_txn(cluster, leader, "k10", 10)
        wait_for(lambda: any(e["event"] == "progress" and e["id"] == 11 for e in stream.events),
                 timeout=30)
        assert stream.changes() == []
        stream.close()
