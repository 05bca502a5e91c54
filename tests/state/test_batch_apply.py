"""A batch entry applies exactly like its members applied one by one at the entry's index."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, strategies as st

from hastate.state.codec import MAX_BATCH_COMMANDS, Command, encode_batch, encode_value
from hastate.state.machine import ReplicatedState, applied_commands
from hastate.state.leases import grant_command

keys = st.sampled_from(["a", "b", "c"])
clients = st.sampled_from([b"", b"client-1", b"client-2"])
seqs = st.integers(1, 6)   # few: the same (client, seq) repeats inside and across batches
int64 = st.integers(-2**63, 2**63 - 1)


@st.composite
def commands(draw: st.DrawFn) -> Command:
    kind = draw(st.sampled_from(["update", "delete", "cas", "barrier"]))
    client, seq = draw(clients), draw(seqs)
    if kind == "update":
        values = draw(st.dictionaries(keys, int64, min_size=1))
        return Command(op="update", client=client, seq=seq,
                       values={k: encode_value(k, v) for k, v in values.items()})
    if kind == "delete":
        return Command(op="delete", client=client, seq=seq, keys=tuple(draw(st.lists(keys))))
    if kind == "cas":
        key = draw(keys)
        return Command(op="cas", client=client, seq=seq,
                       values={key: encode_value(key, draw(int64))},
                       expected={key: draw(st.integers(0, 12))})
    return Command(op="barrier")


class Recorder:
    """Change listener: every (revision, key, change type) the watch hub would see."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, str]] = []

    def changed(self, revision: int, changes) -> None:
        self.seen += [(revision, c.key, c.type) for c in changes]

    def reset(self, revision: int, history) -> None:
        raise AssertionError("no dump is loaded here")

    def export(self) -> list:
        return []


def machine() -> tuple[ReplicatedState, Recorder]:
    state, recorder = ReplicatedState(), Recorder()
    state.add_change_listener(recorder)
    return state, recorder


@given(st.lists(st.lists(commands(), min_size=1, max_size=8), max_size=12))
def test_batches_apply_like_their_members_one_by_one(entries: list[list[Command]]) -> None:
    batched, batched_changes = machine()
    single, single_changes = machine()
    heard: list[tuple[int, int, Command, tuple]] = []
    batched.add_listener(lambda *call: heard.append(call))
    first_result: dict[tuple[bytes, int], tuple] = {}
    for index, members in enumerate(entries, start=2):
        raws = [m.encode() for m in members]
        result = batched.apply_at(index, encode_batch(raws))
        assert result[0] == "batch" and len(result[1]) == len(members)
        one_by_one = [single.apply_at(index, raw) for raw in raws]
        assert list(result[1]) == one_by_one
        for member, member_result in zip(members, result[1]):
            if member.client:   # exactly once: a repeated (client, seq) gets the first answer
                assert first_result.setdefault((member.client, member.seq),
                                               member_result) == member_result
        assert batched.revision == single.revision and batched.applied_index == index
    assert batched.state_hash() == single.state_hash()
    assert batched.snapshot() == single.snapshot()
    assert batched.records("abc") == single.records("abc")
    assert batched_changes.seen == single_changes.seen
    # Each mutation has its own revision, counted without gaps.
    revisions = [r for r, _, _ in batched_changes.seen]
    assert sorted(set(revisions)) == list(range(1, batched.revision + 1))
    # Apply listeners hear each entry once; applied_commands lists its members.
    assert [call[0] for call in heard] == list(range(2, len(entries) + 2))
    assert [[c for c, _ in applied_commands(call[2], call[3])] for call in heard] == entries


def test_a_retried_command_inside_one_batch_applies_once() -> None:
    state, _ = machine()
    write = Command(op="update", client=b"bot", seq=7,
                    values={"n": encode_value("n", 1)}).encode()
    later = Command(op="update", client=b"bot", seq=8,
                    values={"n": encode_value("n", 2)}).encode()
    result = state.apply_at(5, encode_batch([write, later, write]))
    assert result == ("batch", [("ok", 1, 5), ("ok", 2, 5), ("ok", 1, 5)])
    assert state.snapshot() == {"n": 2} and state.revision == 2
    assert state.apply_at(6, write) == ("ok", 1, 5)   # and across entries
    assert state.records(["n"])["n"][1:] == (2, 1, 2)


def test_a_batch_round_trips_through_decode_and_encode() -> None:
    members = [Command(op="update", client=b"c", seq=i, values={"k": encode_value("k", i)})
               for i in range(1, 4)]
    decoded = Command.decode(encode_batch([m.encode() for m in members]))
    assert decoded.op == "batch" and decoded.batch == tuple(members)
    assert Command.decode(decoded.encode()) == decoded


def _envelope(members: object, fields: int = 10) -> bytes:
    return msgpack.packb([2, "batch", b"", 0, {}, [], {}, {}, None, members][:fields],
                         use_bin_type=True)


good = Command(op="barrier").encode()


@pytest.mark.parametrize("raw, reason", [
    (_envelope([]), "list of 1 to 256 encoded commands, got list of 0"),
    (_envelope([good] * (MAX_BATCH_COMMANDS + 1)), "got list of 257"),
    (_envelope(good), "got bytes"),
    (_envelope([good, 3]), "member 1 is int, not an encoded command"),
    (_envelope([b"\x93\x01"]), "member 0: "),
    (_envelope([encode_batch([good])]), "member 0 is itself a batch"),
    (_envelope([good, grant_command(30).encode()]), "member 1 is a lease_grant command"),
    (_envelope([good], fields=9), "envelope of 10 fields, got 9"),
])
def test_a_malformed_batch_is_refused_with_a_clear_error(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match="malformed batch command") as refused:
        Command.decode(raw)
    assert reason in str(refused.value)
    state, _ = machine()
    with pytest.raises(ValueError):
        state.apply_at(2, raw)
    assert state.applied_index == 0 and state.revision == 0


def test_a_replica_replaying_the_shipped_entries_reaches_the_same_state() -> None:
    """Log shipping stores what apply listeners hear (a batch entry re-encoded once); a
    restore replays it with apply_at."""
    state, _ = machine()
    shipped: list[tuple[int, bytes]] = []
    state.add_listener(lambda index, _prev, command, _result:
                       shipped.append((index, command.encode())))
    members = [Command(op="update", client=b"c", seq=i, values={"k": encode_value("k", i)})
               for i in range(1, 5)]
    state.apply_at(2, encode_batch([m.encode() for m in members[:3]]))
    state.apply_at(3, members[3].encode())
    replica, _ = machine()
    for index, raw in shipped:
        replica.apply_at(index, raw)
    assert [i for i, _ in shipped] == [2, 3]
    assert replica.state_hash() == state.state_hash() and replica.revision == 4
