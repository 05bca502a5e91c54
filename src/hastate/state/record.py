"""A key's record packed into one bytes object: revisions first, then the encoded value.

The state holds a record per key; as a ``(value, mod_revision, create_revision, version)``
tuple that is a tuple and a bytes object per key (and the tuple is tracked by the garbage
collector). Packed, it is one bytes object that the state dict, the watch history and the
change listeners all share without copies. Dumps keep the tuple layout (see
``state/machine.py``); only memory changes.

Layout: one tag byte, then mod_revision, create_revision and version as big-endian
unsigned integers of 32 bits (tag 0) or 64 bits (tag 1: any number >= 2**32), then the
value as encoded by :mod:`hastate.state.codec`.
"""

from __future__ import annotations

import struct
from typing import Any, Iterator, Mapping

Record = tuple[bytes, int, int, int]  # (encoded value, mod_revision, create_revision, version)

_SMALL = struct.Struct(">BIII")
_LARGE = struct.Struct(">BQQQ")
_LIMIT = 1 << 32


def pack(value: bytes, mod: int, create: int, version: int) -> bytes:
    """The packed record of ``value`` with these revisions."""
    if mod < _LIMIT and create < _LIMIT and version < _LIMIT:
        return _SMALL.pack(0, mod, create, version) + value
    return _LARGE.pack(1, mod, create, version) + value


def _head(packed: bytes) -> struct.Struct:
    return _SMALL if packed[0] == 0 else _LARGE


def unpack(packed: bytes) -> Record:
    """``(value, mod_revision, create_revision, version)`` of a packed record."""
    head = _head(packed)
    _, mod, create, version = head.unpack_from(packed)
    return packed[head.size:], mod, create, version


def value(packed: bytes) -> bytes:
    """The encoded value of a packed record."""
    return packed[_head(packed).size:]


def mod_revision(packed: bytes) -> int:
    """The revision of the key's last change."""
    return _head(packed).unpack_from(packed)[1]


def revisions(packed: bytes) -> tuple[int, int, int]:
    """``(mod_revision, create_revision, version)`` of a packed record."""
    return _head(packed).unpack_from(packed)[1:]


class RecordView(Mapping[str, Record]):
    """A dict of packed records seen as key -> record tuple (read-only, no copy)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, bytes]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Record:
        return unpack(self._data[key])

    def get(self, key: str, default: Any = None) -> Any:
        packed = self._data.get(key)
        return default if packed is None else unpack(packed)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)
