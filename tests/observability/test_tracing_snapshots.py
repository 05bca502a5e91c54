"""Spans of snapshot uploads (with retries) and restores."""

from __future__ import annotations

import pytest

from hastate.errors import CorruptDataError, SnapshotError
from hastate.snapshots.format import list_snapshots
from hastate.snapshots.stores.memory import MemoryStore
from hastate.snapshots.restore import rebuild
from hastate.snapshots.uploader import SnapshotUploader
from hastate.state.codec import Command, encode_value
from hastate.state.machine import ReplicatedState

from tracing_support import Spans, spans  # noqa: F401  (fixture)


class FlakyStore(MemoryStore):
    """Fails the first ``failures`` writes, like a bucket having a bad minute."""

    def __init__(self, failures: int) -> None:
        super().__init__("flaky-trace")
        self.failures = failures

    def write(self, name: str, data: bytes, **kwargs: object) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise SnapshotError("store unreachable (injected)")
        return super().write(name, data, **kwargs)


def _state(keys: int) -> ReplicatedState:
    machine = ReplicatedState()
    for i in range(keys):
        raw = Command(op="update", values={f"k{i}": encode_value("v", i)}).encode()
        machine.apply_at(i + 1, raw)
    return machine


def test_an_upload_is_one_span_with_its_retries_as_events(spans: Spans) -> None:
    store = FlakyStore(failures=2)
    with SnapshotUploader(store, cluster="snap-trace", backoff_initial=0.01) as uploader:
        uploader.submit(_state(3).to_body(), index=3, term=2, keys=3)
        assert uploader.flush(10)
    upload = spans.one("hastate.snapshot.upload")
    assert upload.attributes["hastate.outcome"] == "uploaded"
    assert upload.attributes["db.namespace"] == "snap-trace"
    assert (upload.attributes["hastate.log.index"], upload.attributes["hastate.raft.term"],
            upload.attributes["hastate.keys.count"]) == (3, 2, 3)
    assert upload.attributes["hastate.snapshot.bytes"] == list_snapshots(store)[0].size
    assert [e.name for e in upload.events] == ["retry", "retry"]
    assert upload.events[0].attributes["error.type"] == "SnapshotError"


def test_a_restore_span_names_the_snapshot_and_the_state_hash(spans: Spans) -> None:
    store = MemoryStore("restore-trace")
    with SnapshotUploader(store, cluster="snap-trace") as uploader:
        uploader.submit(_state(4).to_body(), index=4, term=1, keys=4)
        assert uploader.flush(10)
    result = rebuild(store, "snap-trace")
    restore = spans.one("hastate.restore")
    assert restore.attributes["hastate.snapshot.name"] == result.snapshot.name
    assert restore.attributes["hastate.state_hash"] == result.state_hash
    assert restore.attributes["hastate.log.index"] == 4
    assert restore.status.is_ok


def test_a_refused_restore_marks_its_span_failed(spans: Spans) -> None:
    store = MemoryStore("corrupt-trace")
    with SnapshotUploader(store, cluster="snap-trace") as uploader:
        uploader.submit(_state(2).to_body(), index=2, term=1, keys=2)
        assert uploader.flush(10)
    name = list_snapshots(store)[0].name
    data = bytearray(store.read(name))
    data[-5] ^= 0xFF
    store.write(name, bytes(data))
    with pytest.raises(CorruptDataError):
        rebuild(store, "snap-trace")
    restore = spans.one("hastate.restore")
    assert restore.status.status_code.name == "ERROR"
    assert restore.attributes["error.type"] == "CorruptDataError"
