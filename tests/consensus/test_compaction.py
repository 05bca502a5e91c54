"""Log compaction runs off the Raft thread and truncates the journal only after a durable dump."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hastate import StateManager
from hastate.consensus.node import DUMP
from hastate.state.dump import decode_dump
from hastate.testing import free_port, wait_for


def single_node(tmp_path: Path) -> StateManager:
    sm = StateManager("solo", {"solo": f"127.0.0.1:{free_port()}"}, data_dir=tmp_path / "solo",
                      cluster_name="compaction", log_compaction_entries=20)
    return sm.start(wait_ready=10)


def test_failed_dump_keeps_the_journal_and_a_later_one_truncates_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sm = single_node(tmp_path)
    try:
        monkeypatch.setattr("hastate.consensus.dumper.atomic_write",
                            lambda *_: (_ for _ in ()).throw(OSError(28, "No space left")))
        for i in range(60):
            sm.save_state({f"k{i}": i})
        time.sleep(0.3)
        assert sm.node.syncobj.log_length() > 60          # nothing truncated without a dump
        assert sm.node.syncobj.compactions_total == 0 and sm.node.running
        monkeypatch.undo()
        sm.save_state({"again": 1})
        wait_for(lambda: sm.node.syncobj.compactions_total >= 1)
        assert sm.node.syncobj.log_length() < 20
        header, body = decode_dump((tmp_path / "solo" / DUMP).read_bytes(), source="dump",
                                   cluster="compaction")
        assert header.index >= 60 and len(body["state"]["data"]) >= 60
        expected = sm.get_state()
    finally:
        sm.stop()
    again = single_node(tmp_path)
    try:
        assert again.get_state() == expected               # dump + journal tail = the state
    finally:
        again.stop()


def test_dump_is_written_off_the_raft_thread(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """While a (deliberately slow) dump is written, the Raft thread keeps ticking and writing."""
    sm = single_node(tmp_path)
    try:
        for first in range(0, 50_000, 10_000):
            sm.save_state({f"p{i}": i for i in range(first, first + 10_000)}, timeout=30)
        import hastate.consensus.dumper as dumper_module
        real_write = dumper_module.atomic_write

        def slow_write(path, data):
            time.sleep(1.5)
            real_write(path, data)

        monkeypatch.setattr(dumper_module, "atomic_write", slow_write)
        before = sm.node.syncobj.compactions_total
        sm.node.syncobj.forceLogCompaction()
        writes_during_dump = 0
        while sm.node.syncobj.compactions_total == before:
            sm.save_state({"during": writes_during_dump}, timeout=5)
            writes_during_dump += 1
        assert writes_during_dump > 10            # the Raft thread never waited for the dump
        assert sm.get_state(keys=["p49999"]) == {"p49999": 49_999}
    finally:
        sm.stop()
