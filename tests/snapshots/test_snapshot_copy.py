"""Copying a store to another cloud: everything a restore needs arrives, verified both sides."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st
from store_servers import cloud_store_url, open_test_url

from hastate.cli import cli
from hastate.cli.exit import Exit
from hastate.errors import CorruptDataError
from hastate.snapshots.copy import copy_store, merge_manifest
from hastate.snapshots.format import (Manifest, SnapshotMeta, list_snapshots, snapshot_name,
                                      write_snapshot)
from hastate.snapshots.restore import rebuild
from hastate.snapshots.segments import encode_segment
from hastate.snapshots.store import SnapshotStore
from hastate.state.codec import Command, encode_value
from hastate.state.machine import ReplicatedState

CLUSTER = "alpha"


def command(index: int) -> bytes:
    """The encoded command at log ``index``: set one of seven keys to the index."""
    key = f"k{index % 7}"
    return Command(op="update", values={key: encode_value(key, index)}).encode()


def populate(store: SnapshotStore) -> str:
    """Two snapshots and two segments continuing the newest; return the final state hash."""
    machine = ReplicatedState()
    for index in range(1, 21):
        machine.apply_at(index, command(index))
        if index in (5, 10):
            write_snapshot(store, machine.to_body(), cluster=CLUSTER, index=index, term=1,
                           keys=len(machine))
    for first, last in ((11, 15), (16, 20)):
        entries = [(i, float(i), command(i)) for i in range(first, last + 1)]
        name, blob = encode_segment(entries, cluster=CLUSTER, prev=first - 1, term=1)
        store.write(name, blob)
    return machine.state_hash()


@pytest.mark.parametrize("source, dest", [
    pytest.param("gcs", "s3", marks=[pytest.mark.gcs, pytest.mark.s3]),
    pytest.param("s3", "azure", marks=[pytest.mark.s3, pytest.mark.azure]),
    pytest.param("azure", "gcs", marks=[pytest.mark.azure, pytest.mark.gcs]),
])
def test_copy_between_clouds_restores_the_same_state(request: pytest.FixtureRequest,
                                                     source: str, dest: str) -> None:
    """After a copy, a restore from the destination has the source's state hash."""
    src, dst = (open_test_url(cloud_store_url(request, b)) for b in (source, dest))
    final_hash = populate(src)
    result = copy_store(src, dst)
    assert len(result.copied) == 4 and result.already_present == []
    assert list_snapshots(dst) == list_snapshots(src)
    restored = rebuild(dst, CLUSTER)
    assert (restored.state_hash, restored.index) == (final_hash, 20)
    assert restored.state_hash == rebuild(src, CLUSTER).state_hash
    again = copy_store(src, dst)                    # idempotent: nothing new to write
    assert again.copied == [] and len(again.already_present) == 4


@pytest.mark.s3
@pytest.mark.azure
def test_copy_keeps_snapshots_the_destination_already_lists(request: pytest.FixtureRequest,
                                                            tmp_path) -> None:
    """A mirror that has a newer snapshot of its own keeps it, listed first, after a copy."""
    src = open_test_url(cloud_store_url(request, "s3"))
    dst = open_test_url(cloud_store_url(request, "azure"))
    populate(src)
    newer = write_snapshot(dst, {"x": 1}, cluster=CLUSTER, index=30, term=2, keys=1)
    copy_store(src, dst)
    assert [s.index for s in list_snapshots(dst)] == [30, 10, 5]
    assert list_snapshots(dst)[0] == newer


@pytest.mark.s3
def test_corrupt_source_object_is_refused_and_nothing_listed(request: pytest.FixtureRequest,
                                                             tmp_path) -> None:
    """A snapshot failing verification at the source stops the copy before the manifest."""
    src = open_test_url(f"file://{tmp_path}/src")
    dst = open_test_url(cloud_store_url(request, "s3"))
    populate(src)
    newest = list_snapshots(src)[0]
    blob = bytearray(src.read(newest.name))
    blob[-1] ^= 0xFF
    src.write(newest.name, bytes(blob))
    with pytest.raises(CorruptDataError, match=f"{newest.name}: SHA-256 check failed"):
        copy_store(src, dst)
    assert list_snapshots(dst) == []


@pytest.mark.azure
def test_a_different_object_of_the_same_name_at_the_destination_is_refused(
        request: pytest.FixtureRequest, tmp_path) -> None:
    """An unrelated object already at the destination is reported, never overwritten."""
    src = open_test_url(f"file://{tmp_path}/src")
    dst = open_test_url(cloud_store_url(request, "azure"))
    populate(src)
    oldest = list_snapshots(src)[-1]
    dst.write(oldest.name, b"something else")
    with pytest.raises(CorruptDataError, match="differs from"):
        copy_store(src, dst)
    assert dst.read(oldest.name) == b"something else" and list_snapshots(dst) == []


@pytest.mark.s3
@pytest.mark.azure
def test_cli_copy_reports_and_exit_codes(request: pytest.FixtureRequest, tmp_path) -> None:
    """`hastate snapshot copy` prints what it did; a missing source is exit code 7 (not found)."""
    src_url, dst_url = cloud_store_url(request, "s3"), cloud_store_url(request, "azure")
    populate(open_test_url(src_url))
    runner = CliRunner()
    out = runner.invoke(cli, ["snapshot", "copy", "--from", src_url, "--to", dst_url, "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert (summary["copied"], summary["snapshots_listed"], summary["cluster"]) == (4, 2, CLUSTER)
    empty = f"file://{tmp_path}/empty"
    out = runner.invoke(cli, ["snapshot", "copy", "--from", empty, "--to", dst_url])
    assert out.exit_code == Exit.NOT_FOUND and "no manifest" in out.output
    out = runner.invoke(cli, ["snapshot", "copy", "--from", dst_url, "--to", dst_url])
    assert out.exit_code == Exit.USAGE and "same store" in out.output


def _meta(index: int, tag: str) -> SnapshotMeta:
    return SnapshotMeta(name=snapshot_name(index, 1), cluster=CLUSTER, index=index, term=1,
                        created_at=float(index), format_version=1, size=1, sha256=tag * 64,
                        keys=0)


@given(st.sets(st.integers(1, 40), max_size=12), st.sets(st.integers(1, 40), max_size=12))
def test_merged_manifest_is_the_union_newest_first_keeping_the_destinations_entries(
        dest_indexes: set[int], source_indexes: set[int]) -> None:
    """Against a model: every index once, descending, the destination's entry where both have it."""
    dest = Manifest(cluster=CLUSTER, snapshots=tuple(
        _meta(i, "d") for i in sorted(dest_indexes, reverse=True)))
    source = tuple(_meta(i, "s") for i in sorted(source_indexes, reverse=True))
    merged = merge_manifest(dest, source)
    expected = sorted(dest_indexes | source_indexes, reverse=True)
    assert [s.index for s in merged.snapshots] == expected
    assert all(s.sha256[0] == ("d" if s.index in dest_indexes else "s")
               for s in merged.snapshots)
