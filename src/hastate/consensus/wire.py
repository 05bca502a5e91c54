"""hastate's Raft wire format: framing, strict per-type message schemas, no code on decode.

PySyncObj's own transport sends ``struct.pack('i', len) + zlib(pickle(message))`` and
unpickles whatever arrives, so any peer that can open the port runs code on the node. This
module replaces that format for :mod:`hastate.consensus.transport`:

* **Frame**: ``PROTOCOL_VERSION`` (1 byte) | body length (u32, big-endian) | body. The
  announced length is checked against the connection's maximum as soon as the 5 header bytes
  arrive, before any buffer for the body exists: a peer announcing more is refused.
* **Body**: one msgpack map with a ``type`` key (encrypted first in ``psk`` mode). Decoding
  uses msgpack only; ext types, non-string keys and trailing bytes are refused.
* **Schema**: every type in :data:`MESSAGE_TYPES` lists one or more *variants*, each the exact
  set of keys a message may carry with a validator per key. A message is accepted only if its
  keys are exactly one variant's and every value passes; unknown types are refused. Adding a
  message type is one entry in that table. Types named ``hastate_*`` are hastate's own
  (lease, transfer, health), handled by the consensus layer.
* **Commands**: PySyncObj stores each replicated call as one command-type byte plus a
  *pickle* that it unpickles when it applies the entry. Those bytes travel inside
  ``append_entries`` and ``apply_command``; :func:`check_command` inspects them statically
  (``pickletools.genops`` parses opcodes, it never builds objects) and refuses any pickle that
  could import or call anything beyond what a pickled ``bytes`` needs. So even a peer with a
  valid cluster certificate cannot make another node run code through the log.

Nothing here calls ``pickle.load*``.
"""

from __future__ import annotations

import math
import pickletools
import struct
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import msgpack

from hastate.consensus.membership import MEMBERSHIP_TYPE, MembershipError, decode_change
from hastate.errors import HAStateError

#: First byte of every frame; a peer speaking another version is disconnected.
PROTOCOL_VERSION = 1
#: Default largest frame body a node accepts or sends (64 MiB).
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
#: Prefix of the message types owned by hastate (handled by the consensus layer).
EXTENSION_PREFIX = "hastate_"

_HEADER = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size
_MAX_UINT64 = 2 ** 64 - 1

# PySyncObj's command-type byte (pysyncobj.syncobj._COMMAND_TYPE, 0.3.17).
_CMD_REGULAR = 0
_CMD_NO_OP = 1
_CMD_MEMBERSHIP = MEMBERSHIP_TYPE
_CMD_VERSION = 3

# Opcodes that only build plain values (numbers, strings, bytes, containers) or manage the
# memo/stack. Everything else (INST, OBJ, NEWOBJ*, BUILD, STACK_GLOBAL, EXT*, PERSID, ...)
# can import or construct arbitrary objects and is refused.
_SAFE_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2",
    "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
    "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
    "EMPTY_SET", "ADDITEMS", "FROZENSET",
    # REDUCE calls the callable below it; the only callables that can reach the stack are
    # the globals allowed in _SAFE_GLOBALS, because every other way to get one is refused.
    "REDUCE", "GLOBAL",
})
# Protocol 2 (PySyncObj's) pickles non-empty ``bytes`` as ``_codecs.encode(str, 'latin1')``,
# the only global a command of plain values needs (its output is at most a few times its
# input, which the frame limit bounds). ``b''`` pickles as ``bytes()``, but allowing the
# ``bytes`` global would also allow ``bytes(10**12)``: commands with an empty-bytes value
# are refused (hastate's commands are non-empty msgpack).
_SAFE_GLOBALS = frozenset({"_codecs encode"})


class WireError(HAStateError):
    """Raised when a frame or message breaks the wire format; the connection must be dropped."""


# -- framing ---------------------------------------------------------------------------

def encode_frame(body: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Prefix ``body`` with the version byte and its length; refuse bodies over the maximum."""
    if len(body) > max_frame_bytes:
        raise WireError(f"frame of {len(body)} bytes exceeds the maximum of "
                        f"{max_frame_bytes} bytes")
    return _HEADER.pack(PROTOCOL_VERSION, len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies, holding at most one partial frame.

    The header is checked as soon as it is complete, so an oversized announcement is refused
    while only the bytes the peer actually sent are buffered.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every body now complete. Raises :class:`WireError`."""
        self._buffer += data
        bodies: list[bytes] = []
        while len(self._buffer) >= HEADER_SIZE:
            version, length = _HEADER.unpack_from(self._buffer)
            if version != PROTOCOL_VERSION:
                raise WireError(f"unsupported protocol version {version} "
                                f"(this node speaks {PROTOCOL_VERSION})")
            if length > self.max_frame_bytes:
                raise WireError(f"peer announced a frame of {length} bytes; the maximum is "
                                f"{self.max_frame_bytes} bytes")
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                break
            bodies.append(bytes(self._buffer[HEADER_SIZE:end]))
            del self._buffer[:end]
        return bodies


# -- field validators --------------------------------------------------------------------
# A validator returns the (possibly normalised) value or raises WireError.

Validator = Callable[[Any], Any]


def _uint(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_UINT64:
        raise WireError(f"expected a non-negative integer, got {type(value).__name__}")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise WireError(f"expected a boolean, got {type(value).__name__}")
    return value


def _float(value: Any) -> float:
    if type(value) is not float or not math.isfinite(value):
        raise WireError(f"expected a finite float, got {value!r:.40}")
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise WireError(f"expected a string, got {type(value).__name__}")
    return value


def _bytes(value: Any) -> bytes:
    if type(value) is not bytes:
        raise WireError(f"expected bytes, got {type(value).__name__}")
    return value


def _address(value: Any) -> str:
    address = _str(value)
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or len(address) > 300:
        raise WireError(f"expected a host:port address, got {address!r:.80}")
    return address


def _sequence(value: Any, length: int) -> tuple[Any, ...]:
    if type(value) not in (list, tuple) or len(value) != length:
        raise WireError(f"expected an array of {length} items")
    return tuple(value)


def check_pickle(data: bytes) -> None:
    """Refuse a pickle that could import or call anything beyond building plain values.

    The pickle is parsed opcode by opcode (``pickletools.genops``), never loaded.
    """
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name not in _SAFE_OPCODES:
                raise WireError(f"pickle uses forbidden opcode {opcode.name}")
            if opcode.name == "GLOBAL" and arg not in _SAFE_GLOBALS:
                raise WireError(f"pickle references forbidden global {arg!r:.80}")
    except WireError:
        raise
    except Exception as exc:  # genops raises ValueError and friends on malformed input
        raise WireError(f"malformed pickle: {exc}") from None


# hastate's own commands, as PySyncObj pickles them (protocol 2): a call of method ``id``
# with one bytes argument, ``(id, (_codecs.encode(<latin-1 text>, 'latin1'),))``. Only the
# method id and the text vary, so the layout is checked by slicing instead of walking every
# opcode in Python (a saturated follower spent a third of its time in genops).
_CALL_HEAD = b"c_codecs\nencode\nq\x00X"
_CALL_TAIL = b"q\x01X\x06\x00\x00\x00latin1q\x02\x86q\x03Rq\x04\x85q\x05\x86q\x06."
_U32_LE = struct.Struct("<I")


def is_plain_call(body: bytes) -> bool:
    """Whether ``body`` is exactly a one-bytes-argument call pickle (see above).

    Every such pickle uses only opcodes and the one global that :func:`check_pickle`
    allows; anything else returns False (and goes to the full check).
    """
    if body[:2] != b"\x80\x02":
        return False
    opcode = body[2:3]
    pos = 4 if opcode == b"K" else 5 if opcode == b"M" else 0
    if not pos or body[pos:pos + len(_CALL_HEAD)] != _CALL_HEAD:
        return False
    start = pos + len(_CALL_HEAD) + 4
    if len(body) < start:
        return False
    end = start + _U32_LE.unpack_from(body, start - 4)[0]
    if body[end:] != _CALL_TAIL:
        return False
    try:
        body[start:end].decode("utf-8", "surrogatepass")  # as the unpickler reads it
    except UnicodeDecodeError:
        return False
    return True


def check_command(command: bytes) -> bytes:
    """Refuse a PySyncObj command that would import or call anything when applied.

    Allowed: regular calls and code-version bumps whose pickle holds only plain values
    (:func:`check_pickle`), the leader's no-op and hastate's msgpack membership changes.
    Refused: PySyncObj's pickled membership changes (they pickle node objects) and anything
    else.
    """
    _bytes(command)
    if not command:
        raise WireError("empty command")
    kind, body = command[0], command[1:]
    if kind == _CMD_NO_OP:
        if body:
            raise WireError("no-op command with a body")
        return command
    if kind == _CMD_MEMBERSHIP:
        try:
            decode_change(command)
        except MembershipError as exc:
            raise WireError(f"bad membership command: {exc}") from None
        return command
    if kind not in (_CMD_REGULAR, _CMD_VERSION):
        raise WireError(f"unknown command type {kind}")
    if kind != _CMD_REGULAR or not is_plain_call(body):
        check_pickle(body)
    return command


def _entries(value: Any) -> list[tuple[bytes, int, int]]:
    if type(value) not in (list, tuple):
        raise WireError("entries must be an array")
    result = []
    for item in value:
        command, index, term = _sequence(item, 3)
        result.append((check_command(command), _uint(index), _uint(term)))
    return result


def _snapshot_chunk(value: Any) -> tuple[bytes, bool, bool] | None:
    if value is None:  # the leader had no snapshot ready yet
        return None
    data, is_first, is_last = _sequence(value, 3)
    return _bytes(data), _bool(is_first), _bool(is_last)


# -- schemas ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MessageType:
    """The shapes one message type may take: each variant is an exact key -> validator map."""

    variants: tuple[Mapping[str, Validator], ...]

    @classmethod
    def of(cls, *variants: Mapping[str, Validator], **fields: Validator) -> "MessageType":
        """Build a type from explicit variants, or from keyword fields for a single shape."""
        return cls(variants=tuple(variants) if variants else (dict(fields),))

    def validate(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Return a normalised copy of ``message`` (which includes ``type``) or raise."""
        keys = set(message) - {"type"}
        for variant in self.variants:
            if keys == set(variant):
                result: dict[str, Any] = {"type": message["type"]}
                for key, validator in variant.items():
                    try:
                        result[key] = validator(message[key])
                    except WireError as exc:
                        raise WireError(f"{message['type']}.{key}: {exc}") from None
                return result
        raise WireError(f"{message['type']}: unexpected set of fields {sorted(keys)}")


_APPEND_HEADER = {"term": _uint, "commit_index": _uint}

#: Every message type the transport carries. PySyncObj 0.3.17's shapes are taken from
#: ``SyncObj.__onMessageReceived`` and the matching ``send`` calls. ``append_entries``
#: chunked "transmission" messages (whose payload PySyncObj unpickles) never cross the wire:
#: the sending transport turns them back into one ``entries`` message.
MESSAGE_TYPES: dict[str, MessageType] = {
    # First message on every connection: the sender's Raft address.
    "hello": MessageType.of(address=_address),
    "request_vote": MessageType.of(term=_uint, last_log_index=_uint, last_log_term=_uint),
    "response_vote": MessageType.of(term=_uint),
    "append_entries": MessageType.of(
        {**_APPEND_HEADER, "entries": _entries, "prevLogIdx": _uint, "prevLogTerm": _uint},
        {**_APPEND_HEADER, "serialized": _snapshot_chunk},
    ),
    "next_node_idx": MessageType.of(next_node_idx=_uint, reset=_bool, success=_bool),
    "apply_command": MessageType.of({"command": check_command},
                                    {"command": check_command, "request_id": _uint}),
    "apply_command_response": MessageType.of(
        {"request_id": _uint, "error": _uint},
        {"request_id": _uint, "log_idx": _uint, "log_term": _uint},
    ),
    "timeout_now": MessageType.of(term=_uint),
    "hastate_lease_ping": MessageType.of(term=_uint, sent=_float),
    "hastate_lease_pong": MessageType.of(term=_uint, sent=_float),
    "hastate_transfer": MessageType.of(term=_uint, target=_str),
    "hastate_transfer_request": MessageType.of(target=_str),
    "hastate_health": MessageType.of(healthy=_bool, applied=_uint),
    "hastate_prevote": MessageType.of(term=_uint, last_log_index=_uint, last_log_term=_uint),
    "hastate_prevote_reply": MessageType.of(term=_uint, granted=_bool),
}


def is_extension(message_type: str) -> bool:
    """True for hastate's own message types (handled by the consensus layer)."""
    return message_type.startswith(EXTENSION_PREFIX)


def validate_message(message: Any) -> dict[str, Any]:
    """Check ``message`` against its type's schema; return the normalised message."""
    if type(message) is not dict:
        raise WireError(f"message must be a map, got {type(message).__name__}")
    message_type = message.get("type")
    schema = MESSAGE_TYPES.get(message_type) if type(message_type) is str else None
    if schema is None:
        raise WireError(f"unknown message type {message_type!r:.60}")
    return schema.validate(message)


def encode_message(message: Mapping[str, Any]) -> bytes:
    """Msgpack-encode one message (the frame body, before any encryption).

    Messages built by hastate (``hello`` and ``hastate_*``) are validated here so a bug
    surfaces at its source. PySyncObj's own messages are validated by the receiver only:
    checking every entry's command again on the leader, once per follower, would halve the
    leader's pipelined throughput and protect nobody.
    """
    message_type = message.get("type")
    if message_type == "hello" or (isinstance(message_type, str) and is_extension(message_type)):
        message = validate_message(dict(message))
    try:
        return msgpack.packb(message, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode {message_type!r} message: {exc}") from None


def decode_message(body: bytes) -> dict[str, Any]:
    """Decode and validate one frame body. Raises :class:`WireError`; never runs code."""
    try:
        message = msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=True,
                                  ext_hook=_refuse_ext)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise WireError(f"undecodable message body: {type(exc).__name__}: {exc}") from None
    return validate_message(message)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack ext type {code} is not allowed")

