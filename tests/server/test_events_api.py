"""``/v1/events``: appends and their refusals over HTTP, the ``$all`` SSE keep-alive, and
retention archiving to the node's snapshot store (also through ``hastate events truncate``)."""

from __future__ import annotations

import http.client

import pytest

from hastate.admin_client import call
from hastate.events import NewEvent
from hastate.events.retention import EventArchive, archived_events
from hastate.server import events_api
from hastate.testing.embedded import EmbeddedCluster


def append(ops: EmbeddedCluster, body: dict, token: str | None = None) -> tuple[int, dict]:
    return call("instance-2", ops.http["instance-2"], "/v1/events/append", body=body,
                token=ops.admin_token if token is None else token, timeout=30)


def test_append_and_its_refusals_say_what_is_wrong(ops: EmbeddedCluster) -> None:
    body = {"stream": "api-orders", "expected_version": "no_stream",
            "events": [{"type": "Placed", "data": {"qty": 1}, "metadata": {"causation_id": "c"},
                        "id": "api-1"}]}
    code, first = append(ops, body)
    assert code == 200 and first["versions"] == [0] and not first["replayed"]
    code, again = append(ops, body)                      # a retry: the original positions
    assert code == 200 and again["positions"] == first["positions"] and again["replayed"]
    code, wrong = append(ops, {**body, "events": [{"type": "Placed", "id": "api-2"}]})
    assert code == 409 and wrong["actual_version"] == 0
    code, dup = append(ops, {"stream": "api-other", "events": [{"type": "X", "id": "api-1"}]})
    assert code == 409 and dup["event_ids"] == ["api-1"]
    code, bad = append(ops, {"stream": "api-orders", "events": [{"kind": "X"}]})
    assert code == 400 and "unknown event fields ['kind']" in bad["error"]
    code, bad = append(ops, {"stream": "api-orders", "events": [{"type": "X"}],
                             "expected_version": -2})
    assert code == 400 and "expected_version" in bad["error"]
    code, _ = append(ops, body, token="wrong")
    assert code == 401
    assert ops.sm is not None
    assert [e.id for e in ops.sm.events.read_stream("api-orders")] == ["api-1"]


def test_all_stream_sends_keep_alives_while_quiet(ops: EmbeddedCluster,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_api, "KEEPALIVE", 0.2)    # the embedded node's server
    host, port = ops.http["instance-1"].rsplit(":", 1)
    assert ops.sm is not None
    head = ops.sm.events.head()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", f"/v1/events/all?after={head}",
                     headers={"Authorization": f"Bearer {ops.admin_token}"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.readline() == b": keep-alive\n"
    finally:
        conn.close()


def test_truncate_archives_to_the_nodes_snapshot_store(ops: EmbeddedCluster) -> None:
    assert ops.sm is not None and ops.sm.engine.snapshots is not None
    es = ops.sm.events
    for i in range(5):
        es.append("api-retained", [NewEvent("Tick", {"i": i}, id=f"ret-{i}")])
    before = es.read_stream("api-retained")

    def post(body: dict) -> tuple[int, dict]:
        return call("instance-1", ops.http["instance-1"], "/v1/events/truncate", body=body,
                    token=ops.admin_token, timeout=60)

    code, done = post({"stream": "api-retained", "before_version": 3})
    assert code == 200 and (done["removed"], done["first_version"]) == (3, 3)
    archive = EventArchive(ops.sm.engine.snapshots.store)
    assert archived_events(archive, "events", "api-retained") == before[:3]
    assert [e.id for e in es.read_stream("api-retained")] == ["ret-3", "ret-4"]
    code, bad = post({"stream": "api-retained"})
    assert code == 400 and "exactly one of" in bad["error"]
    out = ops.cli("events", "truncate", "--config", str(ops.config_path), "--stream",
                  "api-retained", "--older-than", "0")
    assert out.returncode == 0, out.stderr
    assert "removed 2 events of api-retained" in out.stdout
    assert es.read_stream("api-retained") == [] and es.stream_version("api-retained") == 4
