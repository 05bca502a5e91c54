"""Every engine exports its state at one revision (the disaster-recovery snapshot), and the
export loads through the public API into another cluster (here the in-process fake engine,
standing for any empty target)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hastate import StateManager, engines
from hastate.engines.contract import Engine
from hastate.snapshots import portable
from hastate.snapshots.stores import open_store
from hastate.testing.engine_files import write_engine_file

from .deployments import Deployment
from .fake_engine import FakeEngine, FakeStore


def test_an_export_holds_every_key_and_lease_at_one_revision_and_loads_elsewhere(
        deployment: Deployment, prefix: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    writer, reader = list(deployment.managers.values())[:2]
    assert all(isinstance(sm.engine, Engine) for sm in deployment.managers.values())
    lease = writer.grant_lease(60)
    writer.save_state({f"{prefix}a": 1, f"{prefix}b": {"x": [1, 2]}})
    last = writer.save_state({f"{prefix}c": "v"}, lease=lease)
    export = reader.engine.export(15.0)
    assert export.revision >= last
    mine = sorted(k for k in export.records if k.startswith(prefix))
    assert mine == [f"{prefix}a", f"{prefix}b", f"{prefix}c"]
    assert {k: export.records[k] for k in mine} == writer.records(mine)
    assert export.leases[lease.id] == (60.0, frozenset({f"{prefix}c"}))

    store = open_store(f"memory://export-{uuid.uuid4().hex}")
    taken = portable.take(reader, store)
    assert taken.revision >= last and taken.engine == deployment.engine
    config = write_engine_file(tmp_path, name=reader.cluster, engine="etcd",
                               settings={"endpoints": ["unused: the fake engine"]})
    target_store = FakeStore(["instance-1"])
    monkeypatch.setattr(engines, "open_engine",
                        lambda cfg, instance, options: FakeEngine(target_store, instance))
    with StateManager.from_config(config, "instance-1", serve_http=False) as target:
        loaded = portable.load_into(target, store)
        assert loaded.keys == len(export.records)
        assert target.get_state(keys=mine) == writer.get_state(keys=mine)
        (moved,) = [info for info in target.leases().values() if info.keys & set(mine)]
        assert moved.ttl == 60.0 and moved.keys == {f"{prefix}c"}


def test_exports_racing_for_one_number_are_both_listed(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore(["instance-1"])
    monkeypatch.setattr(engines, "open_engine",
                        lambda cfg, instance, options: FakeEngine(fake, instance))
    config = write_engine_file(tmp_path, name="race", engine="etcd", settings={},
                               ids=["instance-1"])
    store = open_store(f"memory://race-{uuid.uuid4().hex}")
    with StateManager.from_config(config, "instance-1", serve_http=False) as sm:
        sm.save_state({"k": 1})
        first = portable.take(sm, store)
        sm.save_state({"k": 2})
        real = portable.list_snapshots
        views = [[]]                # the second export saw the manifest before the first
        monkeypatch.setattr(portable, "list_snapshots",
                            lambda s: views.pop() if views else real(s))
        second = portable.take(sm, store)
        assert not views
    assert (first.revision, second.revision) == (1, 2)
    assert [s.name for s in real(store)] == [second.name, first.name]
    assert second.name.startswith("snapshots/00000000000000000002-")
