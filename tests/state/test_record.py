"""Packed key records and the packed changes the watch history keeps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hastate.state import record as rec
from hastate.state.history import Change, History, PackedChanges

revision = st.integers(min_value=0, max_value=2**63 - 1)


@given(st.binary(max_size=300), revision, revision, revision)
def test_a_packed_record_unpacks_to_what_was_packed(value: bytes, mod: int, create: int,
                                                    version: int) -> None:
    packed = rec.pack(value, mod, create, version)
    assert rec.unpack(packed) == (value, mod, create, version)
    assert rec.value(packed) == value
    assert rec.mod_revision(packed) == mod
    assert rec.revisions(packed) == (mod, create, version)


def test_small_revisions_take_the_short_header() -> None:
    assert len(rec.pack(b"v", 2**32 - 1, 1, 1)) < len(rec.pack(b"v", 2**32, 1, 1))


def test_packed_changes_read_as_the_changes_they_stand_for() -> None:
    old = rec.pack(b"old", 3, 2, 2)
    new = rec.pack(b"new", 9, 2, 3)
    packed = PackedChanges(9, ("a", new, old, "b", None, old, "c", rec.pack(b"c", 9, 9, 1),
                               None), 100)
    expected = (Change("put", "a", 9, b"new", 2, 3, b"old"),
                Change("delete", "b", 9, None, 0, 0, b"old"),
                Change("put", "c", 9, b"c", 9, 1, None))
    assert tuple(packed) == expected and packed == expected and len(packed) == 3
    assert packed[-1] == expected[-1] and packed[1:] == expected[1:]
    history = History(10, max_bytes=1000)
    history.append(9, packed)
    assert history.since(9, 5) == [(9, expected)] and history.bytes == 100
