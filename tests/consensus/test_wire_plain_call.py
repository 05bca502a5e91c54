"""The fast check of hastate's own command pickles accepts nothing the full check refuses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pysyncobj import pickle

from hastate.consensus import wire

method = st.integers(min_value=0, max_value=65535)


@given(method, st.binary(min_size=1, max_size=2000))
def test_every_one_bytes_argument_call_takes_the_fast_path(func: int, value: bytes) -> None:
    body = pickle.dumps((func, (value,)))
    assert wire.is_plain_call(body)
    wire.check_pickle(body)   # and the full check agrees


@given(method, st.binary(min_size=1, max_size=200), st.data())
def test_a_mutated_pickle_passes_the_fast_path_only_if_the_full_check_passes(
        func: int, value: bytes, data: st.DataObject) -> None:
    body = bytearray(pickle.dumps((func, (value,))))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    mutated = bytes(body[:cut])
    if wire.is_plain_call(mutated):
        wire.check_pickle(mutated)


def test_other_pickles_go_to_the_full_check() -> None:
    evil = pickle.dumps((0, (b"x",))).replace(b"_codecs\nencode", b"os\nsystem\n\n\n\n\n\n\n\n")
    assert not wire.is_plain_call(evil)
    assert not wire.is_plain_call(pickle.dumps((0, ("text",))))
    assert not wire.is_plain_call(pickle.dumps((0, (b"a", b"b"))))
    assert not wire.is_plain_call(pickle.dumps((0, (b"x",), {"k": 1})))
