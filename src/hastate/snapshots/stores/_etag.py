"""Store generations for backends whose compare-and-set token is an HTTP ETag (S3, Azure).

The Protocol's generation is a positive integer; an ETag is an opaque ASCII string. The
mapping is lossless both ways (the ETag's bytes read as one big-endian integer), so a
generation read from a listing can be handed back as ``If-Match`` unchanged.
"""

from __future__ import annotations


def generation_of(etag: str) -> int:
    """The generation that stands for ``etag`` (quotes ignored); always > 0."""
    bare = etag.strip('"')
    if not bare:
        raise ValueError(f"empty ETag {etag!r}: the server answered without a usable ETag")
    return int.from_bytes(bare.encode("latin-1"), "big")


def etag_of(generation: int) -> str | None:
    """The quoted ETag that ``generation`` stands for, or None if no ETag maps to it."""
    if generation <= 0:
        return None
    raw = generation.to_bytes((generation.bit_length() + 7) // 8, "big")
    if not all(0x21 <= b <= 0x7E and b != 0x22 for b in raw):
        return None
    return f'"{raw.decode("ascii")}"'
