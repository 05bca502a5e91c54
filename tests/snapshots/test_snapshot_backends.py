"""Backend-specific behaviour beyond the shared contract: file bookkeeping, gcs errors."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hastate.errors import SnapshotError, SnapshotNotFoundError
from hastate.snapshots.format import load, write_snapshot
from hastate.snapshots.store import PreconditionFailed
from hastate.snapshots.stores import open_store
from hastate.snapshots.stores.file import FileStore

if TYPE_CHECKING:
    from conftest import FakeGcsServer


class TestFileStore:
    """Generations emulated on disk."""

    def test_object_copied_in_by_hand_has_a_generation(self, tmp_path: Path) -> None:
        """A file without a generation sidecar still counts as existing for preconditions."""
        store = FileStore(tmp_path)
        (tmp_path / "manifest.json").write_bytes(b"{}")
        [info] = store.list()
        assert info.generation > 0
        with pytest.raises(PreconditionFailed):
            store.write("manifest.json", b"new", if_generation_match=0)
        store.write("manifest.json", b"new", if_generation_match=info.generation)
        assert (tmp_path / "manifest.json").read_bytes() == b"new"

    def test_leftover_temporaries_and_bookkeeping_are_not_listed(self, tmp_path: Path) -> None:
        """A .tmp from a crashed write and the .hastate directory are invisible."""
        store = FileStore(tmp_path)
        store.write("snapshots/a", b"a")
        (tmp_path / "snapshots" / "b.tmp").write_bytes(b"partial")
        assert [i.name for i in store.list()] == ["snapshots/a"]
        assert (tmp_path / ".hastate" / "gen" / "snapshots" / "a").exists()

    def test_two_handles_on_one_directory_share_generations(self, tmp_path: Path) -> None:
        """Generations live on disk, so a second opener (another process) sees them."""
        first, second = FileStore(tmp_path), FileStore(tmp_path)
        generation = first.write("m", b"v1")
        second.write("m", b"v2", if_generation_match=generation)
        with pytest.raises(PreconditionFailed):
            first.write("m", b"stale", if_generation_match=generation)
        assert first.read("m") == b"v2"

    def test_copy_without_bookkeeping_is_readable_when_it_cannot_be_added(
            self, tmp_path: Path) -> None:
        """A store copied where .hastate cannot be created (read-only) still restores."""
        source = FileStore(tmp_path / "live")
        meta = write_snapshot(source, {"k": 1}, cluster="alpha", index=3, term=1, keys=1)
        copy = tmp_path / "copy"
        for info in source.list():
            (copy / info.name).parent.mkdir(parents=True, exist_ok=True)
            (copy / info.name).write_bytes(source.read(info.name))
        (copy / ".hastate").write_bytes(b"")  # blocks the bookkeeping dir, even for root
        restored = FileStore(copy)
        assert load(restored, cluster="alpha") == (meta, {"k": 1})
        with pytest.raises(SnapshotError, match="cannot create the snapshot directory"):
            restored.write("x", b"x")

    def test_relative_root_is_refused(self) -> None:
        """A relative root would depend on the working directory: refused."""
        with pytest.raises(ValueError, match="absolute"):
            FileStore("relative/dir")


@pytest.mark.gcs
class TestGCSStore:
    """Errors and layout against the emulator."""

    def test_objects_live_under_the_prefix(self, gcs_bucket: str) -> None:
        """Two prefixes in one bucket are separate stores."""
        a = open_store(f"gs://{gcs_bucket}/cluster-a/", retry_deadline=1.0)
        b = open_store(f"gs://{gcs_bucket}/cluster-b", retry_deadline=1.0)
        a.write("manifest.json", b"a")
        b.write("manifest.json", b"b")
        assert (a.read("manifest.json"), b.read("manifest.json")) == (b"a", b"b")
        assert [i.name for i in a.list()] == ["manifest.json"]
        assert str(a) == f"gs://{gcs_bucket}/cluster-a"
        whole = open_store(f"gs://{gcs_bucket}", retry_deadline=1.0)
        assert [i.name for i in whole.list()] == ["cluster-a/manifest.json",
                                                  "cluster-b/manifest.json"]

    def test_missing_bucket_names_it_and_says_to_create_it(self, gcs_server: FakeGcsServer) -> None:
        """An unknown bucket fails on first use with the bucket and the command to fix it."""
        store = open_store("gs://no-such-bucket-4711/prod", retry_deadline=1.0)
        with pytest.raises(SnapshotError, match=r"^gs://no-such-bucket-4711/prod: init failed: "
                           r"bucket 'no-such-bucket-4711' does not exist; create it \(gcloud "
                           r"storage buckets create gs://no-such-bucket-4711\)"):
            store.write("manifest.json", b"x")

    def test_unreachable_store_fails_fast_naming_object(
            self, restartable_gcs: FakeGcsServer) -> None:
        """With the emulator down a call gives up after its retry deadline, saying why."""
        bucket = restartable_gcs.create_bucket()
        store = open_store(f"gs://{bucket}/p", retry_deadline=0.5, timeout=(0.3, 1.0))
        store.write("snapshots/x", b"x")
        restartable_gcs.stop()
        started = time.monotonic()
        with pytest.raises(SnapshotError, match=rf"gs://{bucket}/p/snapshots/x: read failed: "
                                                "store unreachable"):
            store.read("snapshots/x")
        assert time.monotonic() - started < 5
        restartable_gcs.start()
        assert store.read("snapshots/x") == b"x"

    def test_bucket_deleted_after_first_use_is_reported_on_write(
            self, gcs_server: FakeGcsServer) -> None:
        """A write into a bucket that disappeared names the object and the missing bucket."""
        bucket = gcs_server.create_bucket()
        store = open_store(f"gs://{bucket}/p", retry_deadline=1.0)
        store.init()
        request = urllib.request.Request(f"{gcs_server.url}/storage/v1/b/{bucket}",
                                         method="DELETE")
        urllib.request.urlopen(request, timeout=5).close()
        with pytest.raises(SnapshotError, match=rf"gs://{bucket}/p/manifest\.json: write failed: "
                                                rf"bucket '{bucket}' does not exist"):
            store.write("manifest.json", b"x")

    def test_permission_denied_says_which_role_to_grant(self, forbidding_server: str) -> None:
        """A 403 from the service becomes a message naming the bucket and the IAM role."""
        store = open_store("gs://locked-bucket/prod", retry_deadline=1.0)
        with pytest.raises(SnapshotError, match=r"gs://locked-bucket/prod: init failed: "
                                                r"permission denied .*roles/storage\.objectAdmin "
                                                r"on gs://locked-bucket"):
            store.init()

    def test_missing_object_is_not_found(self, gcs_bucket: str) -> None:
        """404 on an object read maps to SnapshotNotFoundError with the full address."""
        store = open_store(f"gs://{gcs_bucket}/p", retry_deadline=1.0)
        with pytest.raises(SnapshotNotFoundError, match=rf"gs://{gcs_bucket}/p/nothing"):
            store.read("nothing")


class _Forbidden(BaseHTTPRequestHandler):
    """Answers every request like GCS does for a caller without IAM permission."""

    def _deny(self) -> None:
        """Reply 403 with a GCS-style JSON error."""
        body = b'{"error": {"code": 403, "message": "caller does not have storage.objects.list"}}'
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _deny

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def forbidding_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An HTTP endpoint that denies every call (the emulator has no IAM to test 403 with)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
