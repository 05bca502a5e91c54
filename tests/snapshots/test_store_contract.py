"""The SnapshotStore contract, run unchanged against every backend (cloud ones on emulators)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hastate.errors import SnapshotError, SnapshotNotFoundError
from hastate.snapshots.store import PreconditionFailed, SnapshotStore
from hastate.snapshots.stores import open_store
from hastate.snapshots.stores.memory import MemoryStore

BLOB = bytes(range(256)) * 64


class TestContract:
    """Behaviour every backend must share."""

    def test_satisfies_protocol_and_names_itself(self, store: SnapshotStore) -> None:
        """The store is a SnapshotStore whose str() is its URL."""
        assert isinstance(store, SnapshotStore)
        assert store.type in ("memory", "file", "gs", "s3", "az")
        assert str(store).startswith({"memory": "memory://", "file": "file:///",
                                      "gs": "gs://", "s3": "s3://", "az": "az://"}[store.type])

    def test_empty_store_lists_nothing(self, store: SnapshotStore) -> None:
        """A new store (created lazily) has no objects, and init is idempotent."""
        store.init()
        store.init()
        assert store.list() == []

    @pytest.mark.parametrize("data", [b"", b"x", BLOB], ids=["empty", "1B", "16KiB"])
    def test_write_then_read_returns_same_bytes(self, store: SnapshotStore, data: bytes) -> None:
        """Bytes come back exactly, and list reports their size and generation."""
        generation = store.write("dir/obj", data)
        assert store.read("dir/obj") == data
        [info] = store.list()
        assert (info.name, info.size, info.generation) == ("dir/obj", len(data), generation)
        assert generation > 0 and info.updated_at > 0

    def test_overwrite_replaces_content_and_changes_generation(self, store: SnapshotStore) -> None:
        """Each write gets a new generation and the last write wins."""
        first = store.write("a", b"one")
        second = store.write("a", b"two")
        assert second != first
        assert store.read("a") == b"two"
        assert [i.generation for i in store.list("a")] == [second]

    def test_read_missing_raises_not_found_naming_object(self, store: SnapshotStore) -> None:
        """A missing object is SnapshotNotFoundError with the object's address."""
        with pytest.raises(SnapshotNotFoundError, match="nope/missing"):
            store.read("nope/missing")

    def test_delete_removes_object(self, store: SnapshotStore) -> None:
        """A deleted object is gone from read and list; others stay."""
        store.write("keep", b"k")
        store.write("gone", b"g")
        store.delete("gone")
        assert [i.name for i in store.list()] == ["keep"]
        with pytest.raises(SnapshotNotFoundError):
            store.read("gone")

    def test_delete_missing_raises_not_found(self, store: SnapshotStore) -> None:
        """Deleting what is not there is SnapshotNotFoundError, not silence."""
        with pytest.raises(SnapshotNotFoundError, match="never-written"):
            store.delete("never-written")

    def test_generation_zero_means_must_not_exist(self, store: SnapshotStore) -> None:
        """if_generation_match=0 creates a missing object and refuses an existing one."""
        generation = store.write("m", b"first", if_generation_match=0)
        with pytest.raises(PreconditionFailed, match="m") as info:
            store.write("m", b"second", if_generation_match=0)
        assert info.value.expected == 0
        assert store.read("m") == b"first"
        assert store.list("m")[0].generation == generation

    def test_matching_generation_allows_write(self, store: SnapshotStore) -> None:
        """Writing with the current generation succeeds and yields a new one."""
        generation = store.write("m", b"v1")
        newer = store.write("m", b"v2", if_generation_match=generation)
        assert newer != generation
        assert store.read("m") == b"v2"

    def test_stale_generation_is_refused_and_content_kept(self, store: SnapshotStore) -> None:
        """A writer holding an old generation cannot overwrite a newer object."""
        old = store.write("m", b"v1")
        store.write("m", b"v2", if_generation_match=old)
        with pytest.raises(PreconditionFailed):
            store.write("m", b"stale", if_generation_match=old)
        assert store.read("m") == b"v2"

    def test_generation_precondition_on_missing_object_fails(self, store: SnapshotStore) -> None:
        """A positive generation never matches an object that does not exist."""
        with pytest.raises(PreconditionFailed):
            store.write("absent", b"x", if_generation_match=12345)
        assert store.list() == []

    def test_generation_is_not_reused_after_delete(self, store: SnapshotStore) -> None:
        """After delete and re-create, the old generation no longer matches."""
        old = store.write("m", b"v1")
        store.delete("m")
        store.write("m", b"v2")
        with pytest.raises(PreconditionFailed):
            store.write("m", b"stale", if_generation_match=old)

    def test_list_filters_by_prefix_and_sorts_by_name(self, store: SnapshotStore) -> None:
        """list(prefix) returns exactly the matching objects, sorted by name."""
        for name in ["snapshots/b", "snapshots/a", "segments/x", "snapshotsX", "manifest.json"]:
            store.write(name, name.encode())
        assert [i.name for i in store.list("snapshots/")] == ["snapshots/a", "snapshots/b"]
        assert [i.name for i in store.list("snapshots")] == ["snapshots/a", "snapshots/b",
                                                            "snapshotsX"]
        assert [i.name for i in store.list()] == sorted(
            ["snapshots/b", "snapshots/a", "segments/x", "snapshotsX", "manifest.json"])
        assert {i.name: i.size for i in store.list("seg")} == {"segments/x": 10}

    @pytest.mark.parametrize("name", ["", "/abs", "a//b", "a/../b", "./a", ".hidden", "a/",
                                      "x.tmp", "back\\slash", "nul\0", "a" * 1025])
    def test_invalid_names_are_refused(self, store: SnapshotStore, name: str) -> None:
        """Names that could escape the store or collide with temporaries are ValueError."""
        with pytest.raises(ValueError, match="name"):
            store.write(name, b"x")
        with pytest.raises(ValueError):
            store.read(name)


class TestOpenStore:
    """URL parsing and the scheme registry."""

    def test_memory_name_is_shared_and_bare_memory_is_private(self) -> None:
        """memory://name is one store per process; memory:// is a new one each time."""
        shared = open_store("memory://shared-by-name-test")
        shared.write("k", b"v")
        assert open_store("memory://shared-by-name-test").read("k") == b"v"
        assert open_store("memory://") is not open_store("memory://")
        assert isinstance(shared, MemoryStore)

    def test_file_url_opens_directory(self, tmp_path: Path) -> None:
        """file:///abs/dir stores objects as plain files under that directory."""
        store = open_store(f"file://{tmp_path}/d")
        store.write("snapshots/x", b"data")
        assert (tmp_path / "d" / "snapshots" / "x").read_bytes() == b"data"

    @pytest.mark.parametrize("url, message", [
        ("no-scheme", "no scheme"),
        ("ftp://host/dir", "unknown snapshot store scheme 'ftp'"),
        ("store://x", "unknown snapshot store scheme 'store'"),
        ("file://relative/dir", "absolute path"),
        ("gs:///prefix-without-bucket", "needs a bucket"),
    ])
    def test_bad_urls_are_refused_with_a_hint(self, url: str, message: str) -> None:
        """A bad URL fails at open time with a message saying what is expected."""
        with pytest.raises(SnapshotError, match=message):
            open_store(url)
