"""Give memory the C allocator holds but no longer uses back to the OS (glibc only).

Large objects (a Raft entry carrying hundreds of keys, a received batch) come from the C
heap; once log compaction drops them, glibc keeps the freed pages mapped, so the process's
RSS stays as high as it was before the compaction. ``malloc_trim`` returns them. It runs
without the GIL (ctypes releases it), on a short-lived thread, never on the Raft thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Callable

#: Bytes freed (compacted journal entries) that make a trim worth its cost: a trim hands
#: pages back that the allocator must fault in again when it reuses them.
WORTH_TRIMMING = 64 << 20


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):   # not glibc (musl, macOS): nothing to do
        return None


_TRIM = _load_trim()


def trim() -> bool:
    """Return the C heap's free pages to the OS now; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def trim_in_background() -> None:
    """:func:`trim` on a daemon thread (no-op where malloc_trim does not exist)."""
    if _TRIM is not None:
        threading.Thread(target=trim, name="hastate-malloc-trim", daemon=True).start()
