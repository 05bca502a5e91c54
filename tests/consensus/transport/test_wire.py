"""Unit tests of the wire format: framing limits, strict schemas, static command checks."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import msgpack
import pysyncobj.pickle
import pytest
from pysyncobj.node import TCPNode

from hastate.consensus import wire
from hastate.consensus.membership import Change, Member
from hastate.consensus.wire import WireError

from .peers import Touch


def command(*call: Any) -> bytes:
    """A regular command exactly as PySyncObj encodes a @replicated call."""
    return b"\x00" + pysyncobj.pickle.dumps(call)


#: One valid message per type, shaped as PySyncObj 0.3.17 / hastate send them.
SAMPLES: list[dict[str, Any]] = [
    {"type": "hello", "address": "10.0.0.1:4321"},
    {"type": "request_vote", "term": 3, "last_log_index": 10, "last_log_term": 2},
    {"type": "response_vote", "term": 3},
    {"type": "append_entries", "term": 3, "commit_index": 9, "prevLogIdx": 9, "prevLogTerm": 2,
     "entries": [(command(0, (b"payload",)), 10, 3), (b"\x01", 11, 3)]},
    {"type": "append_entries", "term": 3, "commit_index": 9,
     "serialized": (b"snapshot bytes", True, False)},
    {"type": "append_entries", "term": 3, "commit_index": 9, "serialized": None},
    {"type": "next_node_idx", "next_node_idx": 11, "reset": False, "success": True},
    {"type": "apply_command", "command": command(1, (b"x",)), "request_id": 7},
    {"type": "apply_command", "command": command(1, (b"x",))},
    {"type": "apply_command_response", "request_id": 7, "log_idx": 12, "log_term": 3},
    {"type": "apply_command_response", "request_id": 7, "error": 2},
    {"type": "timeout_now", "term": 3},
    {"type": "hastate_lease_ping", "term": 3, "sent": 1234.5},
    {"type": "hastate_lease_pong", "term": 3, "sent": 1234.5},
    {"type": "hastate_transfer", "term": 3, "target": "n2"},
    {"type": "hastate_transfer_request", "target": "10.0.0.2:4321"},
    {"type": "hastate_health", "healthy": True, "applied": 12},
    {"type": "hastate_prevote", "term": 4, "last_log_index": 90, "last_log_term": 3},
    {"type": "hastate_prevote_reply", "term": 4, "granted": False},
]


def roundtrip(message: dict[str, Any]) -> dict[str, Any]:
    return wire.decode_message(wire.encode_message(message))


def test_every_type_has_a_sample() -> None:
    assert {sample["type"] for sample in SAMPLES} == set(wire.MESSAGE_TYPES)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m["type"])
def test_valid_messages_roundtrip(message: dict[str, Any]) -> None:
    decoded = roundtrip(message)
    assert decoded == {key: (list(value) if key == "entries" else value)
                       for key, value in message.items()}


def _wrong_value(value: Any) -> Any:
    """A value of the wrong type for the field currently holding ``value``."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return True if isinstance(value, int) else 12
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, str):
        return value.encode()
    if value is None:
        return b""
    return {"not": "a sequence"}


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m["type"])
def test_each_field_is_type_checked(message: dict[str, Any]) -> None:
    for key, value in message.items():
        if key == "type":
            continue
        bad = {**message, key: _wrong_value(value)}
        body = msgpack.packb(bad, use_bin_type=True)
        with pytest.raises(WireError, match=key):
            wire.decode_message(body)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m["type"])
def test_missing_and_extra_fields_are_refused(message: dict[str, Any]) -> None:
    extra = msgpack.packb({**message, "surprise": 1}, use_bin_type=True)
    with pytest.raises(WireError, match="unexpected set of fields"):
        wire.decode_message(extra)
    shapes = [set(variant) for variant in wire.MESSAGE_TYPES[message["type"]].variants]
    for key in set(message) - {"type"}:
        reduced = {k: v for k, v in message.items() if k != key}
        if set(reduced) - {"type"} in shapes:  # e.g. apply_command without request_id
            continue
        missing = msgpack.packb(reduced, use_bin_type=True)
        with pytest.raises(WireError):
            wire.decode_message(missing)


@pytest.mark.parametrize("body", [
    msgpack.packb({"type": "status"}),                      # PySyncObj admin, not a type
    msgpack.packb(["status"]),                               # PySyncObj utility message
    msgpack.packb({"term": 1}),                              # no type
    msgpack.packb({"type": 7}),
    msgpack.packb({"type": "timeout_now", "term": 1}) + b"\x00",  # trailing data
    msgpack.packb({1: 2}),                                   # non-string key
    msgpack.packb({"type": "hastate_transfer", "term": 1,
                   "target": msgpack.ExtType(5, b"x")}),     # ext type
    msgpack.packb({"type": "hastate_lease_ping", "term": 1, "sent": float("nan")}),
    msgpack.packb({"type": "append_entries", "term": 1, "commit_index": 1, "prevLogIdx": 0,
                   "prevLogTerm": 0, "entries": [[b"\x00", 1]]}),  # entry of 2 items
    msgpack.packb({"type": "response_vote", "term": -1}),
    b"\xc1",                                                 # never-used msgpack byte
    b"",
    pickle.dumps({"type": "response_vote", "term": 1}),     # what PySyncObj would send
])
def test_garbage_and_unknown_messages_are_refused(body: bytes) -> None:
    with pytest.raises(WireError):
        wire.decode_message(body)


def _evil_pickles(path: Path) -> dict[str, bytes]:
    touch = Touch(path)
    return {
        "reduce-p2": pickle.dumps((0, (touch,)), 2),
        "reduce-p4": pickle.dumps((0, (touch,)), 4),   # STACK_GLOBAL
        "reduce-p0": pickle.dumps((0, (touch,)), 0),   # GLOBAL, text protocol
        "inst": b"(S'touch " + str(path).encode() + b"'\nios\nsystem\n.",
        "codecs-encode-then-eval": b"c_codecs\nencode\n(Vx\nVlatin1\ntRcbuiltins\neval\n.",
    }


def test_evil_command_pickles_are_refused_without_running(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    for name, evil in _evil_pickles(canary).items():
        message = {"type": "apply_command", "command": b"\x00" + evil}
        with pytest.raises(WireError, match="forbidden|malformed"):
            wire.decode_message(msgpack.packb(message, use_bin_type=True))
        entries = {"type": "append_entries", "term": 1, "commit_index": 2, "prevLogIdx": 1,
                   "prevLogTerm": 0, "entries": [(b"\x00" + evil, 2, 1)]}
        with pytest.raises(WireError):
            wire.decode_message(msgpack.packb(entries, use_bin_type=True))
        assert not canary.exists(), name
    # Sanity: the canary does fire when the payload is really unpickled.
    pickle.loads(_evil_pickles(canary)["reduce-p2"])
    assert canary.exists()


def test_pickled_membership_unknown_and_allocating_commands_are_refused() -> None:
    membership = b"\x02" + pysyncobj.pickle.dumps(["add", "n4:1", TCPNode("n4:1")])
    # bytes(0x7f000000): 2 GiB allocated on apply.
    huge_bytes = b"\x00\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x7f\x85R."
    empty_bytes = command(1, (b"",))  # pickles as bytes(): refused with the above
    for cmd in (membership, b"\x09" + pysyncobj.pickle.dumps(1), b"", b"\x01extra",
                huge_bytes, empty_bytes):
        with pytest.raises(WireError):
            wire.check_command(cmd)


def test_hastate_membership_commands_pass_only_when_well_formed() -> None:
    good = Change("add", Member("n4", "10.0.0.4:7000", "10.0.0.4:8000", "eu")).encode()
    assert wire.check_command(good) == good
    for bad in (good[:-3], b"\x02" + msgpack.packb({"op": "add"}),
                b"\x02" + msgpack.packb({"op": "drop", "member": {"id": "n", "raft": "h:1"}}),
                b"\x02" + msgpack.packb({"op": "add", "member": {"id": "n", "raft": "nope"}})):
        with pytest.raises(WireError, match="membership"):
            wire.check_command(bad)


@pytest.mark.parametrize("args", [
    (b"\x00",), (b"\x00\xff" * 5000,), ("text", 1.5, None, True, 2 ** 70),
    ({"k": [1, 2, {"n": b"v"}]},), ((1, (2, (3,))),),
])
def test_plain_value_commands_pass_and_still_load(args: tuple[Any, ...]) -> None:
    cmd = command(4, args)
    assert wire.check_command(cmd) == cmd
    assert pysyncobj.pickle.loads(cmd[1:]) == (4, args)
    assert wire.check_command(b"\x03" + pysyncobj.pickle.dumps(2))  # code-version bump


def test_frames_split_and_joined_arbitrarily() -> None:
    bodies = [b"a", b"", b"b" * 70000, b"c" * 3]
    stream = b"".join(wire.encode_frame(body) for body in bodies)
    decoder = wire.FrameDecoder()
    got: list[bytes] = []
    for i in range(0, len(stream), 777):
        got += decoder.feed(stream[i:i + 777])
    assert got == bodies
    assert decoder.buffered == 0


def test_oversized_announcement_is_refused_from_the_header_alone() -> None:
    decoder = wire.FrameDecoder(max_frame_bytes=1 << 20)
    header = struct.pack(">BI", wire.PROTOCOL_VERSION, 1 << 30)
    with pytest.raises(WireError, match="announced a frame of 1073741824 bytes"):
        decoder.feed(header)
    assert decoder.buffered == len(header)
    assert wire.FrameDecoder(1 << 20).feed(struct.pack(">BI", 1, 1 << 20)) == []


def test_wrong_version_and_oversized_send_are_refused() -> None:
    with pytest.raises(WireError, match="version 2"):
        wire.FrameDecoder().feed(struct.pack(">BI", 2, 1) + b"x")
    with pytest.raises(WireError, match="exceeds"):
        wire.encode_frame(b"x" * 101, max_frame_bytes=100)


def test_encode_refuses_invalid_outgoing_messages() -> None:
    with pytest.raises(WireError, match="sent"):
        wire.encode_message({"type": "hastate_lease_ping", "term": 1, "sent": 5})
    with pytest.raises(WireError, match="unknown message type"):
        wire.encode_message({"type": "hastate_unknown"})
