"""The dump container refuses corrupt, truncated and foreign files, naming the check."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, strategies as st

from hastate.errors import CorruptDataError
from hastate.state.dump import decode_dump, encode_dump, pack_in_chunks


def _blob(cluster: str = "c1") -> bytes:
    return encode_dump({"data": {"a": [b"\x01", 3]}}, cluster=cluster, index=3, term=1, keys=1)[1]


def test_round_trip() -> None:
    header, body = decode_dump(_blob(), source="x", cluster="c1")
    assert (header.index, header.term, header.keys) == (3, 1, 1)
    assert body == {"data": {"a": [b"\x01", 3]}}


def test_wrong_cluster_refused() -> None:
    with pytest.raises(CorruptDataError, match="belongs to cluster 'c1', not 'c2'"):
        decode_dump(_blob(), source="snap-1", cluster="c2")


@given(st.integers(min_value=0))
def test_every_truncation_refused(cut: int) -> None:
    blob = _blob()
    cut = cut % len(blob)
    with pytest.raises(CorruptDataError):
        decode_dump(blob[:cut], source="t")


@given(st.integers(min_value=0), st.integers(1, 255))
def test_every_single_byte_corruption_refused(pos: int, flip: int) -> None:
    blob = bytearray(_blob())
    pos = pos % len(blob)
    blob[pos] ^= flip
    with pytest.raises(CorruptDataError):
        decode_dump(bytes(blob), source="c")


def test_message_names_the_failed_check() -> None:
    blob = bytearray(_blob())
    blob[-1] ^= 0xFF
    with pytest.raises(CorruptDataError, match="obj-7: SHA-256 mismatch"):
        decode_dump(bytes(blob), source="obj-7")


_values = st.recursive(st.none() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.binary(max_size=8) | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=4) |
                       st.dictionaries(st.text(max_size=4), inner, max_size=12), max_leaves=60)


@given(_values, st.integers(1, 5))
def test_chunked_packing_is_byte_identical_to_msgpack(value: object, chunk: int) -> None:
    assert pack_in_chunks(value, chunk) == msgpack.packb(value, use_bin_type=True)


def test_chunked_packing_of_a_large_state_shaped_body() -> None:
    body = {"state": {"data": {f"k{i}": [b"v" * (i % 7), i] for i in range(20_000)},
                      "applied_index": 9, "sessions": [], "locks": {}},
            "raft": {"last": [b"\x01", 9, 2], "cluster": [{"id": "a", "raft": "h:1"}]}}
    assert pack_in_chunks(body) == msgpack.packb(body, use_bin_type=True)


@given(st.dictionaries(st.text(max_size=6), st.binary(max_size=20), max_size=40),
       st.integers(1, 8))
def test_a_lazy_body_encodes_as_its_plain_body(values: dict[str, bytes], chunk: int) -> None:
    """Dumps and snapshots pack a view of the packed records: the same bytes as tuples."""
    from hastate.state.codec import Command
    from hastate.state.machine import ReplicatedState
    machine = ReplicatedState()
    if values:
        machine.apply_at(1, Command(op="update", client=b"c" * 16, seq=1,
                                    values=values).encode())
    capture = machine.capture()
    lazy = {"state": capture.body(lazy=True), "raft": {"last": [b"", 1, 1]}}
    plain = {"state": capture.body(), "raft": {"last": [b"", 1, 1]}}
    assert pack_in_chunks(lazy, chunk) == msgpack.packb(plain, use_bin_type=True)
    assert dict(lazy["state"]["data"]) == plain["state"]["data"]
