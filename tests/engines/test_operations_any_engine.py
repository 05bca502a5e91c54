"""Operations work whatever the engine: probes, /status, /metrics, /state, /v1, JSON log
context, ``hastate status`` and ``hastate failover``, on the Raft engine and, as a Protocol
conformance test, on :mod:`fake_engine` (an in-process store behind the Engine contract:
the code above the contract may read nothing else).
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from hastate import StateManager, engines
from hastate.cli import cli
from hastate.observability import logs
from hastate.testing import LocalCluster, wait_for
from hastate.testing.cluster import ADMIN_TOKEN_ENV
from hastate.testing import etcd, firestore
from hastate.testing.engine_files import write_engine_file

from .fake_engine import FakeEngine, FakeStore

IDS = ["instance-1", "instance-2", "instance-3"]
TOKEN = "ops-token"
#: Families only the embedded Raft engine has.
RAFT_ONLY = ("hastate_commit_index", "hastate_journal_fsync_seconds",
             "hastate_elections_started")


def _fake_config(workdir: Path) -> Path:
    return write_engine_file(workdir, name="ops", engine="etcd", http=True,
                             settings={"endpoints": ["unused: the fake engine"]})


@pytest.fixture(params=["fake", "raft", "etcd", "firestore"])
def managers(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, dict[str, StateManager]]]:
    monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)
    with contextlib.ExitStack() as stack:
        if request.param == "fake":
            store = FakeStore(IDS)
            monkeypatch.setattr(engines, "open_engine",
                                lambda config, instance, options: FakeEngine(store, instance))
            config = _fake_config(tmp_path)
        elif request.param == "etcd":
            members = stack.enter_context(etcd.running(tmp_path))
            config = etcd.write_cluster_file(tmp_path / "cluster.toml", members.endpoints,
                                             name="ops", http=True)
        elif request.param == "firestore":
            stack.enter_context(firestore.running(tmp_path))
            config = write_engine_file(tmp_path, name="ops", engine="firestore", http=True,
                                       settings={"project": "hastate-test"})
        else:
            config = LocalCluster(tmp_path, name="ops").config_path
        built = {i: StateManager.from_config(config, i, write_timeout=15.0) for i in IDS}
        for sm in built.values():
            stack.enter_context(sm)
        wait_for(lambda: sum(sm.is_leader() for sm in built.values()) == 1 and
                 all(sm.ready() for sm in built.values()), timeout=30,
                 what="one leader, every instance ready")
        yield config, built


def http(sm: StateManager, path: str, body: dict | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://{sm.http_address}{path}", method="GET" if body is None else "POST",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            code = resp.status
    except urllib.error.HTTPError as exc:
        raw, code = exc.read(), exc.code
    return code, (raw.decode() if path == "/metrics" else json.loads(raw))


def status_cli(config: Path) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(cli, ["status", "--config", str(config), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_endpoints_cli_and_log_context_work_on_every_engine(
        managers: tuple[Path, dict[str, StateManager]]) -> None:
    config, sms = managers
    leader = next(sm for sm in sms.values() if sm.is_leader())
    engine = leader.engine.name
    written = leader.save_state({"ops/k": 1})
    for sm in sms.values():
        assert http(sm, "/healthz") == (200, {"ok": True, "error": None})
        code, ready = http(sm, "/readyz")
        assert code == 200 and ready["leader"] == leader.instance_id
        code, status = http(sm, "/status")
        assert code == 200 and status["engine"] == engine and status["revision"] >= 0
        assert status["is_leader"] == (sm is leader)
        assert ("journal_fsyncs" in status) == ("commit_index" in status) == (engine == "raft")

    code, metrics = http(leader, "/metrics")
    assert code == 200
    assert f'hastate_is_leader{{node="{leader.instance_id}"}} 1.0' in metrics
    assert f'engine="{engine}"' in metrics and "hastate_keys{" in metrics
    assert all((family in metrics) == (engine == "raft") for family in RAFT_ONLY), engine

    code, state = http(leader, "/state")
    assert code == 200 and state["state"]["ops/k"] == 1 and state["revision"] >= written
    code, done = http(leader, "/v1/txn", {"success": [{"op": "put", "key": "ops/t",
                                                        "value": 2}]})
    assert code == 200 and done["succeeded"] and done["revision"] > written

    logs.bind_node(leader)
    context = logs.node_context()
    assert context["role"] == "leader" and context["term"] is not None

    exit_code, rows = status_cli(config)
    assert exit_code == 0, rows
    assert [r["id"] for r in rows if r["is_leader"]] == [leader.instance_id]
    table = CliRunner().invoke(cli, ["status", "--config", str(config)])
    header, *lines = table.stdout.splitlines()
    progress = "commit_index" if engine == "raft" else "revision"
    assert table.exit_code == 0 and progress in header.split(), table.stdout
    assert len(lines) == 4 and lines[-1].startswith(f"OK: leader {leader.instance_id}")

    target = next(i for i in IDS if i != leader.instance_id)
    moved = CliRunner().invoke(cli, ["failover", "--config", str(config), "--to", target])
    assert moved.exit_code == 0 and f"-> {target}" in moved.stdout, moved.output
    wait_for(lambda: sms[target].is_leader(), timeout=30, what=f"{target} leads")
    wait_for(lambda: status_cli(config)[0] == 0, timeout=30, what="hastate status OK")
    assert [r["id"] for r in status_cli(config)[1] if r["is_leader"]] == [target]
