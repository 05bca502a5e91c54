"""The command envelope's ``meta`` element (trace context): old commands still decode, and
meta never changes the rest of the command."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hastate.state.codec import COMMAND_FORMAT_VERSION, Command

text = st.text(max_size=12)
commands = st.builds(
    Command,
    op=st.sampled_from(["update", "delete", "cas", "barrier"]),
    client=st.binary(max_size=16),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    values=st.dictionaries(text, st.binary(max_size=8), max_size=3),
    keys=st.lists(text, max_size=3).map(tuple),
    expected=st.dictionaries(text, st.integers(min_value=0, max_value=2**63 - 1), max_size=3),
    meta=st.dictionaries(text, text, max_size=3))


def old_layout(command: Command) -> list:
    """The first seven elements, laid out as before meta existed (the model)."""
    return [COMMAND_FORMAT_VERSION, command.op, command.client, command.seq, command.values,
            list(command.keys), command.expected]


@given(commands)
def test_meta_round_trips_and_is_the_only_addition(command: Command) -> None:
    encoded = command.encode()
    assert Command.decode(encoded) == command
    fields = msgpack.unpackb(encoded, raw=False)
    assert fields[:7] == old_layout(command)
    assert fields[7:] == [command.meta, command.txn]


def test_a_command_written_before_meta_decodes_with_empty_meta() -> None:
    old = msgpack.packb([1, "update", b"c" * 16, 7, {"k": b"\x01"}, [], {}], use_bin_type=True)
    command = Command.decode(old)
    assert command.meta == {} and command.seq == 7 and command.values == {"k": b"\x01"}
    assert command.legacy


def test_traceparent_travels_in_meta() -> None:
    meta = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    command = Command(op="update", client=b"c", seq=1, values={"k": b"v"}, meta=meta)
    assert Command.decode(command.encode()).meta == meta


@pytest.mark.parametrize("meta", [["traceparent"], {"traceparent": 1}, {"k": None}])
def test_malformed_meta_is_refused(meta: object) -> None:
    raw = msgpack.packb([1, "update", b"", 1, {}, [], {}, meta], use_bin_type=True)
    with pytest.raises(ValueError, match="meta must map str to str"):
        Command.decode(raw)


def test_a_command_with_unknown_fields_is_refused() -> None:
    fields = [COMMAND_FORMAT_VERSION, "update", b"", 1, {}, [], {}, {}, None,
              "from a newer hastate"]
    with pytest.raises(ValueError, match="command has 10 fields"):
        Command.decode(msgpack.packb(fields, use_bin_type=True))


def test_a_command_with_too_few_fields_is_refused() -> None:
    fields = [COMMAND_FORMAT_VERSION, "update", b"", 1, {}, []]
    with pytest.raises(ValueError, match="unsupported command format"):
        Command.decode(msgpack.packb(fields, use_bin_type=True))
