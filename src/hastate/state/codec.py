"""msgpack encoding of state values and state-machine commands.

Values: everything msgpack carries (None, bool, int up to 64 bits, float, str, bytes, lists,
dicts), plus ``datetime`` and ``decimal.Decimal``, both exact. Tuples come back as lists.

Datetimes: an aware one's tzinfo comes back as a fixed-offset ``datetime.timezone`` with
the same UTC offset (so the value compares equal and prints the same instant and offset).
A naive one (``datetime.now()``) comes back naive with the same wall-clock fields,
microseconds included, under its own ext code. hastate never converts: a naive value
written in Tokyo reads back as the same digits in Iowa, where they mean another instant.
Use ``datetime.now(timezone.utc)`` when regions compare times (docs/architecture.md).
"""

from __future__ import annotations

import datetime as _dt
import decimal
from dataclasses import dataclass, field
from typing import Any

import msgpack

#: Version of the command envelope; bumped when the command layout changes. Format 1 (seven
#: fields, before cluster revisions existed) still decodes: such a command sets the cluster
#: revision to its log index, as revisions were log indexes then (see ``state/machine.py``).
COMMAND_FORMAT_VERSION = 2
LEGACY_COMMAND_FORMAT = 1

#: Op of a command that groups several proposals into one log entry (see ``Command.batch``).
BATCH_OP = "batch"
#: Most commands one batch holds (the proposal grouping never builds larger ones).
MAX_BATCH_COMMANDS = 256

_EXT_DATETIME = 1         # aware datetime, ISO 8601 with its offset
_EXT_DECIMAL = 2
_EXT_NAIVE_DATETIME = 3   # naive datetime, ISO 8601 without offset (kept naive on decode)
_FOLD = ";fold=1"         # suffix of a naive datetime in the repeated hour (fold=1)


def _default(obj: Any) -> msgpack.ExtType:
    if isinstance(obj, _dt.datetime):
        if obj.utcoffset() is None:
            text = obj.replace(tzinfo=None).isoformat() + (_FOLD if obj.fold else "")
            return msgpack.ExtType(_EXT_NAIVE_DATETIME, text.encode())
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, decimal.Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    if isinstance(obj, int):
        raise TypeError(f"integer {obj} does not fit in 64 bits; store it as Decimal or str")
    raise TypeError(f"cannot encode value of type {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_DATETIME:
        return _dt.datetime.fromisoformat(data.decode())
    if code == _EXT_NAIVE_DATETIME:
        text = data.decode()
        fold = text.endswith(_FOLD)
        return _dt.datetime.fromisoformat(text.removesuffix(_FOLD)).replace(fold=int(fold))
    if code == _EXT_DECIMAL:
        return decimal.Decimal(data.decode())
    return msgpack.ExtType(code, data)


def packb(obj: Any) -> bytes:
    """Encode ``obj`` with hastate's ext types; raises TypeError or OverflowError."""
    return msgpack.packb(obj, default=_default, use_bin_type=True, strict_types=False)


def unpackb(data: bytes) -> Any:
    """Decode bytes written by :func:`packb`."""
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def _locate(value: Any, path: str) -> tuple[str, str]:
    """Find the innermost element of ``value`` that cannot be encoded: (path, reason)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int, bytes)):
                return f"{path} (key {k!r})", f"dict key of type {type(k).__name__}"
            try:
                packb(v)
            except (TypeError, OverflowError, ValueError):
                return _locate(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            try:
                packb(v)
            except (TypeError, OverflowError, ValueError):
                return _locate(v, f"{path}[{i}]")
    try:
        packb(value)
    except (TypeError, ValueError) as exc:
        return path, str(exc)
    except OverflowError:
        return path, f"integer {value!r} does not fit in 64 bits; store it as Decimal or str"
    return path, "unknown"


def encode_value(key: str, value: Any) -> bytes:
    """Encode one top-level value; raise TypeError naming the key path and type on failure."""
    try:
        return packb(value)
    except (TypeError, OverflowError, ValueError):
        where, reason = _locate(value, repr(key))
        raise TypeError(f"state value at {where} cannot be stored: {reason}. "
                        "Supported: None, bool, int (64-bit), float, str, bytes, list, tuple, "
                        "dict, datetime, Decimal") from None


def decode_value(data: bytes) -> Any:
    """Decode a value written by :func:`encode_value`."""
    return unpackb(data)


def check_key(key: Any) -> str:
    """Return ``key`` if it is a valid top-level key, else raise TypeError/ValueError."""
    if not isinstance(key, str):
        raise TypeError(f"state keys must be str, got {type(key).__name__} ({key!r})")
    if not key:
        raise ValueError("state keys must not be empty")
    return key


@dataclass(frozen=True)
class Command:
    """One state-machine command, as proposed to the log.

    ``op`` is one of ``update`` (merge ``values``), ``delete`` (remove ``keys``), ``cas``
    (set ``values`` only if every key in ``expected`` has that mod_revision; 0 = absent),
    ``txn`` (a transaction: ``txn`` holds its wire form, see :mod:`hastate.state.txn`),
    and ``barrier`` (changes nothing; used for linearizable reads). ``client``/``seq``
    identify the proposal so a retried proposal is applied once.

    Envelope: ``[format, op, client, seq, values, keys, expected, meta, txn]``; ``meta``
    (str -> str, e.g. trace context) and ``txn`` are optional trailing elements, absent in
    format-1 commands. ``format`` records the envelope a decoded command came in.

    The lock ops (:attr:`LOCK_OPS`) are no longer proposed (the lock recipe runs on leases
    and transactions) but still apply, so older journals and snapshots replay identically.
    ``lock_acquire``, ``lock_renew`` and ``lock_release`` (read with :meth:`lock_args`) used
    the same fields: ``keys`` = (lock name,), ``values`` = {"owner": utf-8, "ttl": msgpack
    float, "now": msgpack float} and ``expected`` = {"token": the holder's fencing token (0 =
    none)}; ``lock_purge`` dropped the lock entries expired at ``values["now"]``.

    ``meta`` (str -> str) travels with the command but never changes what it does: it
    carries the W3C trace context (``traceparent``) of the proposer; older commands decode
    with ``meta == {}``.

    ``batch`` groups several proposals into one log entry (built by :func:`encode_batch`):
    its members apply in order at the entry's index, each with its own client id, sequence
    number, revision and result. It is a tenth envelope element, present only then. Lease
    and lock commands (:attr:`ALONE_OPS`) are never members.
    """

    op: str
    client: bytes = b""
    seq: int = 0
    values: dict[str, bytes] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    expected: dict[str, int] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    txn: Any = None
    format: int = COMMAND_FORMAT_VERSION
    batch: tuple["Command", ...] = ()

    #: Lock commands of older versions: applied when replayed, never proposed any more.
    LOCK_OPS = ("lock_acquire", "lock_renew", "lock_release", "lock_purge")
    #: Lease commands, built and applied by :mod:`hastate.state.leases`.
    LEASE_OPS = ("lease_grant", "lease_keepalive", "lease_revoke", "lease_expire")
    #: Ops of single commands (a batch, ``BATCH_OP``, only groups them).
    OPS = ("update", "delete", "cas", "barrier", "txn") + LOCK_OPS + LEASE_OPS
    #: Ops whose apply depends on the log index (a lease id or a lock token is the index of
    #: its grant): they never join a batch, whose members all apply at one index.
    ALONE_OPS = LOCK_OPS + LEASE_OPS

    @property
    def legacy(self) -> bool:
        """True for a command written before cluster revisions (format 1)."""
        return self.format == LEGACY_COMMAND_FORMAT

    def lock_args(self) -> tuple[str, str, float, float, int]:
        """(name, owner, ttl, now, token) of a lock command.

        :raises ValueError: when the fields do not hold a well-formed lock command.
        """
        try:
            (name,) = self.keys
            owner = self.values["owner"].decode()
            ttl = msgpack.unpackb(self.values["ttl"])
            now = msgpack.unpackb(self.values["now"])
            token = self.expected.get("token", 0)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError,
                msgpack.UnpackException) as exc:
            raise ValueError(f"malformed {self.op} command: {exc!r}") from None
        if not (isinstance(name, str) and name and owner and isinstance(token, int)
                and not isinstance(token, bool) and token >= 0
                and all(isinstance(x, float) and -float("inf") < x < float("inf")
                        for x in (ttl, now))
                and (ttl > 0 or self.op == "lock_release")):
            raise ValueError(f"malformed {self.op} command")
        return name, owner, ttl, now, token

    def encode(self) -> bytes:
        """Serialize the command for the Raft log (always the current format)."""
        if self.op == BATCH_OP:
            return encode_batch([member.encode() for member in self.batch])
        return msgpack.packb([COMMAND_FORMAT_VERSION, self.op, self.client, self.seq,
                              self.values, list(self.keys), self.expected, self.meta,
                              self.txn], use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> "Command":
        """Parse a command from the Raft log; raise ValueError on an unknown format."""
        fields = msgpack.unpackb(data, raw=False, use_list=True)
        if not isinstance(fields, list) or not fields or \
                fields[0] not in (LEGACY_COMMAND_FORMAT, COMMAND_FORMAT_VERSION) or \
                len(fields) < 7:
            raise ValueError(f"unsupported command format: {fields[:1] if isinstance(fields, list) else type(fields)}")
        if fields[1] == BATCH_OP:
            return cls._decode_batch(fields)
        if len(fields) > 9:
            # More fields come from a newer hastate: applying without them could diverge.
            raise ValueError(f"command has {len(fields)} fields, this hastate reads 7 to 9; "
                             "run the same hastate version on every node")
        version, op, client, seq, values, keys, expected = fields[:7]
        meta = fields[7] if len(fields) > 7 and fields[7] is not None else {}
        txn = fields[8] if len(fields) > 8 else None
        if op not in cls.OPS:
            raise ValueError(f"unknown command op {op!r}")
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in meta.items()):
            raise ValueError(f"command meta must map str to str, got {meta!r}")
        return cls(op=op, client=client, seq=seq, values=values, keys=tuple(keys),
                   expected=expected, meta=meta, txn=txn, format=version)

    @classmethod
    def _decode_batch(cls, fields: list[Any]) -> "Command":
        """A batch envelope: ten fields, the tenth a non-empty list of encoded commands."""
        if len(fields) != 10 or fields[0] != COMMAND_FORMAT_VERSION:
            raise ValueError(f"malformed batch command: expected a format-"
                             f"{COMMAND_FORMAT_VERSION} envelope of 10 fields, got "
                             f"{len(fields)} fields of format {fields[0]!r}")
        members = fields[9]
        if not isinstance(members, list) or not members or len(members) > MAX_BATCH_COMMANDS:
            count = len(members) if isinstance(members, list) else "?"
            raise ValueError(f"malformed batch command: its members must be a list of 1 to "
                             f"{MAX_BATCH_COMMANDS} encoded commands, got "
                             f"{type(members).__name__} of {count}")
        decoded = []
        for position, raw in enumerate(members):
            if not isinstance(raw, bytes):
                raise ValueError(f"malformed batch command: member {position} is "
                                 f"{type(raw).__name__}, not an encoded command")
            try:
                member = cls.decode(raw)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise ValueError(f"malformed batch command: member {position}: {exc}") from None
            if member.op == BATCH_OP:
                raise ValueError(f"malformed batch command: member {position} is itself a "
                                 "batch; batches do not nest")
            if member.op in Command.ALONE_OPS:
                raise ValueError(f"malformed batch command: member {position} is a "
                                 f"{member.op} command, which names things by its own log "
                                 "index and never shares an entry")
            decoded.append(member)
        return cls(op=BATCH_OP, batch=tuple(decoded))


def encode_batch(members: list[bytes]) -> bytes:
    """One log entry's command applying the encoded commands ``members`` in order.

    Built on the Raft thread from commands already encoded by their proposers, so nothing
    is decoded here; :meth:`Command.decode` checks every member when the entry applies.
    """
    return msgpack.packb([COMMAND_FORMAT_VERSION, BATCH_OP, b"", 0, {}, [], {}, {}, None,
                          members], use_bin_type=True)
