"""The background uploader: never blocks the caller, retries, drops, skips, and recovers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from hastate.errors import SnapshotError
from hastate.snapshots.format import list_snapshots, load, snapshot_name, write_snapshot
from hastate.snapshots.store import location
from hastate.snapshots.stores import open_store
from hastate.snapshots.stores.memory import MemoryStore
from hastate.snapshots.uploader import SnapshotUploader

if TYPE_CHECKING:
    from conftest import FakeGcsServer

NOW = 1_700_000_000.0


class ControlledStore(MemoryStore):
    """A MemoryStore whose writes can be held at a gate or made to fail, like a sick bucket."""

    def __init__(self) -> None:
        super().__init__("controlled")
        self.gate = threading.Event()
        self.gate.set()
        self.write_started = threading.Event()
        self.failing_writes = 0
        self.always_fail = False

    def write(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Wait at the gate, then fail if told to, else store."""
        self.write_started.set()
        assert self.gate.wait(30), "test left the gate closed"
        if self.always_fail or self.failing_writes > 0:
            self.failing_writes -= 1
            raise SnapshotError(f"{location(self, name)}: store unreachable (injected)")
        return super().write(name, data, if_generation_match=if_generation_match)


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def controlled() -> ControlledStore:
    """A fresh controllable store."""
    return ControlledStore()


@pytest.fixture
def uploader(controlled: ControlledStore) -> Iterator[SnapshotUploader]:
    """A started uploader on the controlled store with fast backoff and a fixed clock."""
    up = SnapshotUploader(controlled, cluster="alpha", backoff_initial=0.02, backoff_max=0.08,
                          clock=lambda: NOW)
    up.start()
    try:
        yield up
    finally:
        controlled.gate.set()
        up.stop(timeout=10)


def test_upload_succeeds_and_status_describes_it(controlled: ControlledStore,
                                                 uploader: SnapshotUploader) -> None:
    """A submitted body ends up loadable, and status records size, time and index."""
    assert uploader.submit({"a": 1}, 5, 2, 1)
    assert uploader.flush(10)
    meta, body = load(controlled, cluster="alpha")
    assert (meta.index, meta.term, body) == (5, 2, {"a": 1})
    status = uploader.status()
    assert (status.uploads_total, status.failures_total, status.last_index) == (1, 0, 5)
    assert status.last_size_bytes == meta.size
    assert status.last_success_at == NOW
    assert status.last_duration_s is not None and status.last_duration_s >= 0
    assert (status.last_error, status.pending) == (None, 0)


def test_unchanged_or_older_index_is_skipped(uploader: SnapshotUploader) -> None:
    """Submitting an index at or below the last upload does nothing but count a skip."""
    uploader.submit({"a": 1}, 5, 1, 1)
    assert uploader.flush(10)
    assert not uploader.submit({"a": 1}, 5, 1, 1)
    assert not uploader.submit({"a": 0}, 4, 1, 1)
    assert uploader.flush(10)
    status = uploader.status()
    assert (status.skipped_total, status.uploads_total) == (2, 1)


def test_submit_never_blocks_and_full_queue_drops_oldest(controlled: ControlledStore) -> None:
    """While the store hangs, submits return at once; the oldest queued snapshot is dropped."""
    up = SnapshotUploader(controlled, cluster="alpha", queue_size=2)
    controlled.gate.clear()
    with up:
        up.submit({"i": 1}, 1, 1, 1)
        assert controlled.write_started.wait(10)
        started = time.monotonic()
        accepted = [up.submit({"i": i}, i, 1, 1) for i in (2, 3, 4)]
        elapsed = time.monotonic() - started
        assert accepted == [True, True, True]
        assert elapsed < 0.5  # the store is held indefinitely: a blocking submit never returns
        assert (up.status().dropped_total, up.status().pending) == (1, 2)
        controlled.gate.set()
        assert up.flush(10)
    assert [s.index for s in list_snapshots(controlled)] == [4, 3, 1]
    assert up.status().uploads_total == 3


def test_failed_upload_is_retried_with_backoff(controlled: ControlledStore,
                                               uploader: SnapshotUploader) -> None:
    """Three failures are counted and waited out (0.02 + 0.04 + 0.08 s), then it succeeds."""
    controlled.failing_writes = 3
    started = time.monotonic()
    uploader.submit({"a": 1}, 9, 1, 1)
    assert uploader.flush(10)
    assert time.monotonic() - started >= 0.13
    status = uploader.status()
    assert (status.failures_total, status.uploads_total, status.last_index) == (3, 1, 9)
    assert status.last_error is not None and "store unreachable (injected)" in status.last_error
    assert status.last_error_at == NOW
    assert [s.index for s in list_snapshots(controlled)] == [9]


def test_newer_submission_supersedes_a_failing_one(controlled: ControlledStore,
                                                   uploader: SnapshotUploader) -> None:
    """While index 1 keeps failing, submitting 2 abandons 1; only 2 is uploaded."""
    controlled.always_fail = True
    uploader.submit({"i": 1}, 1, 1, 1)
    _wait_until(lambda: uploader.status().failures_total >= 1)
    uploader.submit({"i": 2}, 2, 1, 1)
    _wait_until(lambda: uploader.status().dropped_total == 1)
    controlled.always_fail = False
    assert uploader.flush(10)
    assert [s.index for s in list_snapshots(controlled)] == [2]
    assert uploader.status().uploads_total == 1


def test_stale_snapshot_is_not_retried(controlled: ControlledStore,
                                       uploader: SnapshotUploader) -> None:
    """When another node already listed a newer snapshot, the upload fails once, for good."""
    write_snapshot(controlled, {"new": 1}, cluster="alpha", index=50, term=3, keys=1)
    uploader.submit({"old": 1}, 40, 2, 1)
    assert uploader.flush(10)
    status = uploader.status()
    assert (status.failures_total, status.uploads_total) == (1, 0)
    assert status.last_error is not None and status.last_error.startswith("StaleSnapshotError")
    assert snapshot_name(40, 2) not in [i.name for i in controlled.list()]


def test_unencodable_body_fails_once_and_uploader_keeps_working(
        uploader: SnapshotUploader) -> None:
    """A body msgpack cannot encode is a bug: counted, not retried, and the thread survives."""
    uploader.submit({"bad": object()}, 1, 1, 1)
    assert uploader.flush(10)
    assert uploader.status().failures_total == 1
    uploader.submit({"good": 1}, 2, 1, 1)
    assert uploader.flush(10)
    assert uploader.status().uploads_total == 1


def test_keep_prunes_after_each_upload(controlled: ControlledStore) -> None:
    """With keep=2 only the two newest snapshots stay listed and stored."""
    with SnapshotUploader(controlled, cluster="alpha", keep=2) as up:
        for index in (1, 2, 3, 4):
            up.submit({"i": index}, index, 1, 1)
            assert up.flush(10)
    assert [s.index for s in list_snapshots(controlled)] == [4, 3]
    assert [i.name for i in controlled.list("snapshots/")] == [snapshot_name(3, 1),
                                                               snapshot_name(4, 1)]


def test_stop_discards_pending_and_ends_the_thread(controlled: ControlledStore) -> None:
    """stop() returns after the current attempt; queued snapshots are not uploaded."""
    up = SnapshotUploader(controlled, cluster="alpha")
    controlled.gate.clear()
    before = set(threading.enumerate())
    up.start()
    [thread] = set(threading.enumerate()) - before
    with pytest.raises(RuntimeError, match="twice"):
        up.start()
    up.submit({"i": 1}, 1, 1, 1)
    assert controlled.write_started.wait(10)
    up.submit({"i": 2}, 2, 1, 1)
    threading.Timer(0.05, controlled.gate.set).start()
    up.stop(timeout=10)
    assert not thread.is_alive()
    assert [s.index for s in list_snapshots(controlled)] == [1]
    assert up.status().pending == 0


@pytest.mark.gcs
def test_uploader_rides_out_an_emulator_outage(restartable_gcs: FakeGcsServer) -> None:
    """Kill the emulator mid-run: submits stay instant, failures are counted, and uploads
    resume when it comes back on the same port."""
    bucket = restartable_gcs.create_bucket()
    store = open_store(f"gs://{bucket}/prod", retry_deadline=1.0, timeout=(0.2, 1.0))
    with SnapshotUploader(store, cluster="prod", backoff_initial=0.05, backoff_max=0.2) as up:
        up.submit({"v": 1}, 1, 1, 1)
        assert up.flush(10)
        restartable_gcs.stop()
        slowest = 0.0
        for index in range(2, 8):
            started = time.monotonic()
            assert up.submit({"v": index}, index, 1, 1)
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 0.25  # a failing store call takes about 1 s (its retry deadline)
        _wait_until(lambda: up.status().dropped_total == 5 and up.status().failures_total >= 2)
        status = up.status()
        assert status.uploads_total == 1
        assert status.last_error is not None
        assert f"gs://{bucket}/prod/" in status.last_error and "unreachable" in status.last_error
        restartable_gcs.start()
        assert up.flush(20)
    status = up.status()
    assert (status.uploads_total, status.last_index) == (2, 7)
    assert status.last_success_at is not None and status.last_error_at is not None
    assert status.last_success_at > status.last_error_at
    assert [s.index for s in list_snapshots(store)] == [7, 1]
    assert load(store, cluster="prod")[1] == {"v": 7}
