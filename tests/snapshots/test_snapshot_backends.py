"""Backend-specific behaviour beyond the shared contract: file bookkeeping, gcs errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hastate.errors import SnapshotError, SnapshotNotFoundError
from hastate.snapshots.file import FileStore
from hastate.snapshots.store import PreconditionFailed, open_store

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

    def test_missing_object_is_not_found(self, gcs_bucket: str) -> None:
        """404 on an object read maps to SnapshotNotFoundError with the full address."""
        store = open_store(f"gs://{gcs_bucket}/p", retry_deadline=1.0)
        with pytest.raises(SnapshotNotFoundError, match=rf"gs://{gcs_bucket}/p/nothing"):
            store.read("nothing")
