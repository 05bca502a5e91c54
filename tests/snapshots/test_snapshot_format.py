"""Snapshot objects, the manifest codec, and verification of what a restore would load."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hastate.errors import CorruptDataError, SnapshotNotFoundError
from hastate.snapshots.format import (
    MANIFEST_NAME,
    Manifest,
    SnapshotMeta,
    StaleSnapshotError,
    decode_manifest,
    encode_manifest,
    latest,
    list_snapshots,
    load,
    parse_segment_name,
    parse_snapshot_name,
    read_manifest,
    segment_name,
    snapshot_name,
    verify,
    write_manifest,
    write_snapshot,
)
from hastate.snapshots.store import SnapshotStore
from hastate.state.dump import encode_dump

BODY = {"positions": {"BTC-USD": "1.5", "ETH-USD": "-3"}, "orders": list(range(50))}
INDEXES = st.integers(min_value=0, max_value=10**20 - 1)
TERMS = st.integers(min_value=0, max_value=2**63)

metas = st.builds(
    lambda index, term, **rest: SnapshotMeta(name=snapshot_name(index, term), index=index,
                                             term=term, **rest),
    index=INDEXES, term=TERMS, cluster=st.text(max_size=20),
    created_at=st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 2**40),
    format_version=st.integers(0, 10), size=st.integers(0, 2**40),
    sha256=st.text("0123456789abcdef", min_size=64, max_size=64), keys=st.integers(0, 2**32))
manifests = st.builds(Manifest, cluster=st.text(max_size=20),
                      snapshots=st.lists(metas, max_size=4).map(tuple))


def _put(store: SnapshotStore, index: int, term: int = 1, cluster: str = "alpha",
         body: dict[str, object] | None = None) -> SnapshotMeta:
    """Upload a snapshot of ``body`` (default BODY) at ``index``."""
    body = BODY if body is None else body
    return write_snapshot(store, body, cluster=cluster, index=index, term=term, keys=len(body))


class TestNames:
    """Object names encode position and sort by it."""

    @given(INDEXES, TERMS)
    def test_snapshot_name_round_trips(self, index: int, term: int) -> None:
        """parse_snapshot_name inverts snapshot_name."""
        assert parse_snapshot_name(snapshot_name(index, term)) == (index, term)

    @given(INDEXES, INDEXES, TERMS, TERMS)
    def test_snapshot_names_sort_by_index(self, a: int, b: int, ta: int, tb: int) -> None:
        """String order of names is index order, whatever the terms."""
        if a != b:
            assert (snapshot_name(a, ta) < snapshot_name(b, tb)) == (a < b)

    @given(INDEXES, INDEXES)
    def test_segment_name_round_trips(self, first: int, last: int) -> None:
        """parse_segment_name inverts segment_name."""
        assert parse_segment_name(segment_name(first, last)) == (first, last)

    @pytest.mark.parametrize("name", ["manifest.json", "snapshots/12-1.hsnap",
                                      "snapshots/00000000000000000012-1.hsnap.tmp",
                                      "segments/00000000000000000001-2.hseg"])
    def test_foreign_names_do_not_parse(self, name: str) -> None:
        """Names that are not exactly ours are not mistaken for snapshots or segments."""
        assert parse_snapshot_name(name) is None
        assert parse_segment_name(name) is None


class TestManifestCodec:
    """The manifest is JSON that round-trips and is refused when malformed."""

    @given(manifests)
    def test_round_trip(self, manifest: Manifest) -> None:
        """decode(encode(m)) == m for any manifest."""
        assert decode_manifest(encode_manifest(manifest), source="m") == manifest

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_raise_only_corrupt_data(self, data: bytes) -> None:
        """Garbage is refused with CorruptDataError, never another exception."""
        try:
            decode_manifest(data, source="m")
        except CorruptDataError:
            pass

    def _doc(self) -> dict[str, Any]:
        """A valid one-entry manifest as a JSON document to damage."""
        meta = SnapshotMeta(name=snapshot_name(5, 2), cluster="c", index=5, term=2,
                            created_at=1.0, format_version=1, size=10, sha256="0" * 64, keys=1)
        doc = json.loads(encode_manifest(Manifest(cluster="c", snapshots=(meta,))))
        assert isinstance(doc, dict)
        return doc

    @pytest.mark.parametrize("edit, message", [
        (lambda d: d.update(format_version=2), "format version 2 is not supported"),
        (lambda d: d.pop("cluster"), "field 'cluster' is missing"),
        (lambda d: d["snapshots"][0].update(index="5"), "field 'index' .* wrong type"),
        (lambda d: d["snapshots"][0].update(keys=True), "field 'keys' .* wrong type"),
        (lambda d: d["snapshots"][0].update(index=6), "does not match its index 6"),
        (lambda d: d["snapshots"][0].pop("sha256"), r"snapshots\[0\].*exactly the fields"),
    ])
    def test_malformed_manifest_names_the_check(
            self, edit: Callable[[dict[str, Any]], object], message: str) -> None:
        """Each kind of damage is refused with the source and what is wrong."""
        doc = self._doc()
        edit(doc)
        with pytest.raises(CorruptDataError, match=f"^gs://b/manifest.json.*{message}"):
            decode_manifest(json.dumps(doc).encode(), source="gs://b/manifest.json")

    def test_not_json_is_refused(self) -> None:
        """A manifest that is not JSON says so."""
        with pytest.raises(CorruptDataError, match="not valid JSON"):
            decode_manifest(b"\x00garbage", source="m")


class TestWriteAndLoad:
    """Uploading snapshots, listing them, and loading them back."""

    def test_snapshot_round_trips_and_manifest_lists_newest_first(
            self, store: SnapshotStore) -> None:
        """Loaded bodies equal what was written; the manifest describes each object."""
        first = _put(store, 100, term=1)
        second = _put(store, 250, term=2, body={"k": 1})
        assert list_snapshots(store) == [second, first]
        assert latest(store) == second
        assert load(store, cluster="alpha") == (second, {"k": 1})
        assert load(store, cluster="alpha", name=first.name) == (first, BODY)
        blob = store.read(first.name)
        assert (first.size, first.keys, first.cluster) == (len(blob), 2, "alpha")
        assert first.name == "snapshots/00000000000000000100-1.hsnap"

    def test_repeated_upload_is_idempotent(self, store: SnapshotStore) -> None:
        """Uploading the same position twice lists it once and keeps the first object."""
        meta = _put(store, 7)
        assert _put(store, 7) == meta
        assert [s.name for s in list_snapshots(store)] == [meta.name]
        assert verify(store, meta.name, "alpha") == meta

    def test_object_left_by_a_crashed_upload_is_adopted(self, store: SnapshotStore) -> None:
        """If the object exists but was never listed, the stored copy is verified and listed."""
        _, blob = encode_dump({"a": 1}, cluster="alpha", index=9, term=3, keys=1)
        store.write(snapshot_name(9, 3), blob)
        meta = write_snapshot(store, {"a": 1}, cluster="alpha", index=9, term=3, keys=1)
        assert meta.size == len(blob)
        assert load(store, cluster="alpha") == (meta, {"a": 1})

    def test_stale_snapshot_is_refused_and_leaves_no_object(self, store: SnapshotStore) -> None:
        """A snapshot not newer than the newest listed one is refused before upload."""
        newest = _put(store, 50)
        with pytest.raises(StaleSnapshotError, match="not newer than .*00050") as info:
            _put(store, 40)
        assert info.value.newest == newest
        assert [i.name for i in store.list("snapshots/")] == [newest.name]

    def test_foreign_manifest_is_refused(self, store: SnapshotStore) -> None:
        """A store already holding another cluster's manifest is not written to."""
        _put(store, 1, cluster="alpha")
        with pytest.raises(CorruptDataError, match=f"{MANIFEST_NAME}: belongs to cluster "
                                                   "'alpha', not 'beta'"):
            _put(store, 2, cluster="beta")
        assert [s.cluster for s in list_snapshots(store)] == ["alpha"]

    def test_empty_store_has_no_latest(self, store: SnapshotStore) -> None:
        """No manifest means no snapshot, reported as SnapshotNotFoundError."""
        assert read_manifest(store) == (None, 0)
        with pytest.raises(SnapshotNotFoundError, match="no snapshot listed"):
            latest(store)


class TestVerify:
    """verify() refuses anything that does not match the manifest, naming object and check."""

    def test_flipped_byte_fails_sha256_check(self, store: SnapshotStore) -> None:
        """One corrupt byte is caught by the manifest's SHA-256."""
        meta = _put(store, 10)
        blob = bytearray(store.read(meta.name))
        blob[-5] ^= 0xFF
        store.write(meta.name, bytes(blob))
        with pytest.raises(CorruptDataError, match=f"{meta.name}: SHA-256 check failed"):
            verify(store, meta.name, "alpha")

    def test_truncated_object_fails_size_check(self, store: SnapshotStore) -> None:
        """A short object is caught by the manifest's size."""
        meta = _put(store, 10)
        store.write(meta.name, store.read(meta.name)[:-1])
        with pytest.raises(CorruptDataError, match=f"{meta.name}: size check failed: manifest "
                                                   f"says {meta.size} bytes, object has "
                                                   f"{meta.size - 1}"):
            verify(store, meta.name, "alpha")

    def test_wrong_cluster_is_refused(self, store: SnapshotStore) -> None:
        """Verifying as another cluster fails on the object's own cluster check."""
        meta = _put(store, 10, cluster="alpha")
        with pytest.raises(CorruptDataError, match=f"{meta.name}: belongs to cluster 'alpha', "
                                                   "not 'beta'"):
            verify(store, meta.name, "beta")

    def test_corruption_matching_a_forged_manifest_fails_dump_checks(
            self, store: SnapshotStore) -> None:
        """Even if the manifest agrees with a corrupt object, the dump's checksums refuse it."""
        meta = _put(store, 10)
        blob = bytearray(store.read(meta.name))
        blob[-5] ^= 0xFF
        store.write(meta.name, bytes(blob))
        forged = dataclasses.replace(meta, sha256=hashlib.sha256(blob).hexdigest())
        manifest, generation = read_manifest(store)
        assert manifest is not None
        write_manifest(store, dataclasses.replace(manifest, snapshots=(forged,)),
                       generation=generation)
        with pytest.raises(CorruptDataError, match=f"{meta.name}: (SHA-256 mismatch|payload "
                                                   "does not decode)"):
            verify(store, meta.name, "alpha")

    def test_manifest_disagreeing_with_header_is_refused(self, store: SnapshotStore) -> None:
        """A manifest entry whose fields differ from the object's header is refused."""
        meta = _put(store, 10)
        manifest, generation = read_manifest(store)
        assert manifest is not None
        write_manifest(store, dataclasses.replace(
            manifest, snapshots=(dataclasses.replace(meta, keys=99),)), generation=generation)
        with pytest.raises(CorruptDataError, match=f"{meta.name}: manifest agreement check "
                                                   "failed.*keys: manifest 99, object 2"):
            verify(store, meta.name, "alpha")

    def test_unlisted_and_missing_snapshots_are_not_found(self, store: SnapshotStore) -> None:
        """Only listed snapshots verify; a listed but deleted object is reported as missing."""
        meta = _put(store, 10)
        with pytest.raises(SnapshotNotFoundError, match="not listed"):
            verify(store, snapshot_name(11, 1), "alpha")
        store.delete(meta.name)
        with pytest.raises(SnapshotNotFoundError, match=f"{meta.name}: listed in "
                                                        f"{MANIFEST_NAME} but the object is "
                                                        "missing"):
            verify(store, meta.name, "alpha")
