"""Returning the C heap's free pages to the OS after log compaction."""

from __future__ import annotations

import platform
import threading

import pytest

from hastate import _malloc

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="malloc_trim exists in glibc only")
def test_trim_runs_where_glibc_has_malloc_trim() -> None:
    blocks = [bytes(40_000) for _ in range(500)]   # C-heap sized, like a big Raft entry
    del blocks[::2]
    assert _malloc.trim() is True


def test_trim_in_background_runs_on_its_own_thread() -> None:
    _malloc.trim_in_background()
    trims = [t for t in threading.enumerate() if t.name == "hastate-malloc-trim"]
    for thread in trims:
        thread.join(5)
        assert not thread.is_alive()
    assert (_malloc._TRIM is not None) == GLIBC
