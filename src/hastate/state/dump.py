"""The checksummed container for a full copy of the state (node dumps and snapshots).

Layout: ``MAGIC`` (8 bytes) | header length (u32, big-endian) | header (msgpack map) |
CRC-32 of the header (u32) | payload (zlib-compressed msgpack). The header records the
cluster name, the Raft ``index`` and ``term`` the state is at, the key count, the payload
size and its SHA-256, so a reader can refuse a truncated, corrupt or foreign file before
it touches any state. Never pickle.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

import msgpack

from hastate.errors import CorruptDataError, ForeignDataError

MAGIC = b"HASTATE\x01"
#: Version of the dump layout; readers refuse versions they do not know.
DUMP_FORMAT_VERSION = 1
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class DumpHeader:
    """What a dump says about itself, readable without decoding the payload."""

    cluster: str
    index: int
    term: int
    keys: int
    payload_size: int
    sha256: str
    created_at: float = field(default_factory=time.time)
    format_version: int = DUMP_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


class UnpackedView(Mapping[str, Any]):
    """``data`` with each value passed through ``unpack`` when read (or packed, a chunk at a
    time by :func:`pack_in_chunks`), so a body can stand for a million values without
    building them all at once. Encodes as the plain map ``{k: unpack(v)}`` would."""

    __slots__ = ("_data", "_unpack")

    def __init__(self, data: Mapping[str, Any], unpack: Callable[[Any], Any]) -> None:
        self._data = data
        self._unpack = unpack

    def __getitem__(self, key: str) -> Any:
        return self._unpack(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _walk(value: Any) -> bool:
    return type(value) is dict or type(value) is UnpackedView


def pack_in_chunks(obj: Any, chunk: int = 4096) -> bytes:
    """``msgpack.packb(obj, use_bin_type=True)``, byte for byte, a few ms of GIL at a time.

    msgpack packs a whole object in one C call that holds the GIL: for a million keys that
    stalls the Raft thread for about a second while a dump is written in the background.
    Maps larger than ``chunk`` are packed ``chunk`` entries per call (each call's map
    header dropped), and maps holding maps are walked, so other threads run in between.
    An :class:`UnpackedView` is packed as its plain map, ``chunk`` values unpacked at a time.
    """
    if not _walk(obj) or (type(obj) is dict and len(obj) <= chunk and
                          not any(_walk(v) for v in obj.values())):
        return msgpack.packb(obj, use_bin_type=True)
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_map_header(len(obj))]
    if type(obj) is dict and len(obj) <= chunk:
        for key, value in obj.items():
            parts += (packer.pack(key), pack_in_chunks(value, chunk))
        return b"".join(parts)
    if type(obj) is UnpackedView:
        items = list(obj._data.items())
        unpack = obj._unpack
        for start in range(0, len(items), chunk):
            part = {k: unpack(v) for k, v in items[start:start + chunk]}
            parts.append(packer.pack(part)[len(packer.pack_map_header(len(part))):])
        return b"".join(parts)
    items = list(obj.items())
    for start in range(0, len(items), chunk):
        part = dict(items[start:start + chunk])
        if any(_walk(v) for v in part.values()):
            for key, value in part.items():
                parts += (packer.pack(key), pack_in_chunks(value, chunk))
        else:
            parts.append(packer.pack(part)[len(packer.pack_map_header(len(part))):])
    return b"".join(parts)


def encode_dump(body: dict[str, Any], *, cluster: str, index: int, term: int, keys: int,
                extra: dict[str, Any] | None = None, level: int = 1,
                created_at: float | None = None) -> tuple[DumpHeader, bytes]:
    """Serialize ``body`` (plain msgpack types only) into the dump container.

    ``created_at`` (default: now) is the wall-clock time recorded in the header; the same
    body, index and ``created_at`` always give the same bytes.
    """
    payload = zlib.compress(pack_in_chunks(body), level)
    header = DumpHeader(cluster=cluster, index=index, term=term, keys=keys,
                        payload_size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
                        extra=dict(extra or {}),
                        created_at=time.time() if created_at is None else created_at)
    raw_header = msgpack.packb(asdict(header), use_bin_type=True)
    blob = b"".join((MAGIC, _LEN.pack(len(raw_header)), raw_header,
                     _LEN.pack(zlib.crc32(raw_header)), payload))
    return header, blob


def read_header(blob: bytes, *, source: str) -> tuple[DumpHeader, int]:
    """Parse and check the header; return it and the payload offset."""
    if len(blob) < len(MAGIC) + 4 or blob[:len(MAGIC)] != MAGIC:
        raise CorruptDataError(f"{source}: not a hastate dump (bad magic); "
                               "was it written by another program or truncated to nothing?")
    (hlen,) = _LEN.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + 4
    end = start + hlen
    if len(blob) < end + 4:
        raise CorruptDataError(f"{source}: truncated inside the header ({len(blob)} bytes)")
    raw_header = blob[start:end]
    (crc,) = _LEN.unpack_from(blob, end)
    if zlib.crc32(raw_header) != crc:
        raise CorruptDataError(f"{source}: header checksum mismatch: the file is corrupt")
    fields = msgpack.unpackb(raw_header, raw=False)
    version = fields.get("format_version")
    if version != DUMP_FORMAT_VERSION:
        raise CorruptDataError(f"{source}: dump format version {version} is not supported "
                               f"(this hastate reads {DUMP_FORMAT_VERSION}); upgrade hastate")
    try:
        header = DumpHeader(**fields)
    except TypeError as exc:
        raise CorruptDataError(f"{source}: malformed header: {exc}") from None
    return header, end + 4


def decode_dump(blob: bytes, *, source: str,
                cluster: str | None = None) -> tuple[DumpHeader, dict[str, Any]]:
    """Verify and decode a dump; raise CorruptDataError naming the check that failed."""
    header, offset = read_header(blob, source=source)
    if cluster is not None and header.cluster != cluster:
        raise ForeignDataError(f"{source}: belongs to cluster {header.cluster!r}, not "
                               f"{cluster!r}; point hastate at this cluster's own data")
    payload = blob[offset:]
    if len(payload) != header.payload_size:
        raise CorruptDataError(f"{source}: payload is {len(payload)} bytes, header says "
                               f"{header.payload_size}: the file is truncated or padded")
    if hashlib.sha256(payload).hexdigest() != header.sha256:
        raise CorruptDataError(f"{source}: SHA-256 mismatch: the payload is corrupt")
    try:
        body = msgpack.unpackb(zlib.decompress(payload), raw=False, strict_map_key=False)
    except (zlib.error, ValueError, msgpack.ExtraData) as exc:
        raise CorruptDataError(f"{source}: payload does not decode: {exc}") from None
    return header, body
