"""State-machine commands against a model dict: deterministic, atomic, exactly once."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, strategies as st

from hastate.state.codec import Command, decode_value, encode_value
from hastate.state.machine import DEDUP_WINDOW, ReplicatedState


def make() -> ReplicatedState:
    machine = ReplicatedState()
    machine._syncObj = SimpleNamespace(raftLastApplied=0)  # stands in for Raft's applied index
    return machine


def apply(machine: ReplicatedState, cmd: Command) -> tuple:
    result = machine.apply_at(machine._syncObj.raftLastApplied + 1, cmd.encode())
    machine._syncObj.raftLastApplied += 1
    return result


def upd(**kv: object) -> Command:
    return Command(op="update", values={k: encode_value(k, v) for k, v in kv.items()})


keys = st.sampled_from(["a", "b", "c"])
int64 = st.integers(-2**63, 2**63 - 1)
ops = st.one_of(
    st.tuples(st.just("update"), st.dictionaries(keys, int64, min_size=1)),
    st.tuples(st.just("delete"), st.lists(keys, min_size=1)),
    st.tuples(st.just("cas"), keys, st.integers(0, 30), int64),
)


@given(st.lists(ops, max_size=30))
def test_matches_model_and_replicas_agree(seq: list) -> None:
    """Revision +1 per write that changed something; per-key mod/create/version as etcd."""
    a, b = make(), make()
    model: dict[str, tuple[int, int, int, int]] = {}   # key -> (value, mod, create, version)
    revision = 0

    def put(key: str, v: int) -> None:
        old = model.get(key)
        model[key] = (v, revision, old[2] if old else revision, old[3] + 1 if old else 1)

    for op in seq:
        if op[0] == "update":
            cmd = Command(op="update", values={k: encode_value(k, v) for k, v in op[1].items()})
            revision += 1
            for k, v in op[1].items():
                put(k, v)
        elif op[0] == "delete":
            cmd = Command(op="delete", keys=tuple(op[1]))
            if any(k in model for k in op[1]):
                revision += 1
            for k in op[1]:
                model.pop(k, None)
        else:
            _, key, expected, value = op
            cmd = Command(op="cas", values={key: encode_value(key, value)}, expected={key: expected})
            if (model[key][1] if key in model else 0) == expected:
                revision += 1
                put(key, value)
        assert apply(a, cmd) == apply(b, cmd)
        assert a.revision == revision
    assert a.snapshot() == {k: v for k, (v, *_) in model.items()}
    assert a.revisions() == {k: r for k, (_, r, _, _) in model.items()}
    assert {k: rec[1:] for k, rec in a.records(model).items()} == \
        {k: rec[1:] for k, rec in model.items()}
    assert a.state_hash() == b.state_hash()


def test_update_is_atomic_and_records_revision() -> None:
    m = make()
    assert apply(m, upd(a=1, b=2)) == ("ok", 1, 1)
    assert m.snapshot() == {"a": 1, "b": 2} and m.revisions() == {"a": 1, "b": 1}
    apply(m, Command(op="barrier"))                      # log index 2, no revision
    assert apply(m, upd(a=3)) == ("ok", 2, 3)
    assert m.records(["a"])["a"][1:] == (2, 1, 2)        # mod 2, created at 1, version 2
    assert apply(m, Command(op="delete", keys=("zz",))) == ("ok", 2, 4)   # nothing deleted
    assert apply(m, Command(op="delete", keys=("a",))) == ("ok", 3, 5)
    apply(m, upd(a=4))
    assert m.records(["a"])["a"][1:] == (4, 4, 1)        # re-created: version restarts


def test_cas_conflict_changes_nothing() -> None:
    m = make()
    apply(m, upd(a=1))
    res = apply(m, Command(op="cas", values={"a": encode_value("a", 9)}, expected={"a": 5}))
    assert res == ("conflict", "a", 5, 1)
    assert m.snapshot() == {"a": 1}


def test_retried_proposal_applies_once_and_returns_the_first_result() -> None:
    m = make()
    cmd = Command(op="update", client=b"c1", seq=7, values={"n": encode_value("n", 1)})
    first = apply(m, cmd)
    apply(m, upd(n=5))
    again = apply(m, cmd)                  # a retry after the write already applied
    assert again == first and m.snapshot() == {"n": 5}


def test_sequence_too_old_to_tell_is_reported_expired() -> None:
    m = make()
    apply(m, Command(op="update", client=b"c", seq=DEDUP_WINDOW + 10, values={"x": b"\x01"}))
    assert apply(m, Command(op="update", client=b"c", seq=1, values={"x": b"\x02"})) == ("expired",)
    assert m.snapshot() == {"x": 1}


def test_body_round_trip_keeps_state_and_dedup() -> None:
    m = make()
    cmd = Command(op="update", client=b"c", seq=1, values={"k": encode_value("k", "v")})
    apply(m, cmd)
    other = make()
    other.load_body(m.to_body())
    assert other.snapshot() == {"k": "v"} and other.state_hash() == m.state_hash()
    other._syncObj.raftLastApplied = 5
    assert apply(other, cmd) == ("ok", 1, 1)  # still deduplicated after a restore
    assert decode_value(other.to_body()["data"]["k"][0]) == "v"


def test_listener_errors_do_not_break_apply() -> None:
    m = make()
    seen = []
    m.add_listener(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    m.add_listener(lambda i, prev, c, r: seen.append((i, prev)))
    assert apply(m, upd(a=1)) == ("ok", 1, 1) and seen == [(1, 0)]
    m._syncObj.raftLastApplied += 3             # three Raft no-ops in between
    apply(m, upd(a=2))
    assert seen[-1] == (5, 1)


@pytest.mark.parametrize("op", ["update", "cas"])
def test_barrier_changes_nothing(op: str) -> None:
    m = make()
    apply(m, upd(a=1))
    before = m.state_hash()
    apply(m, Command(op="barrier"))
    assert m.state_hash() == before


def test_body_without_revisions_loads_with_derived_ones_and_replicas_agree() -> None:
    """A body from before revisions: [value, log index] per key, no "revision"."""
    old = {"data": {"a": [encode_value("a", 1), 3], "b": [encode_value("b", 2), 7]},
           "applied_index": 9, "sessions": [[b"c", 4, [[4, ["ok", 7]]]]]}
    m = make()
    m.load_body(old)
    assert m.revision == 9 and m.revisions() == {"a": 3, "b": 7}
    assert m.records(["a"])["a"][1:] == (3, 3, 1)
    m._syncObj.raftLastApplied = 9
    assert apply(m, Command(op="update", client=b"c", seq=4, values={})) == ("ok", 7)  # dedup
    assert apply(m, upd(a=5)) == ("ok", 10, 11)


def test_commands_in_the_old_envelope_set_the_revision_to_their_log_index() -> None:
    """Replaying an old log: replicas that loaded old dumps at different points agree."""
    import msgpack

    def old_update(key: str, value: int) -> bytes:
        return msgpack.packb([1, "update", b"", 0, {key: encode_value(key, value)}, [], {}],
                             use_bin_type=True)

    log = {1: old_update("a", 1), 2: old_update("b", 2),
           3: msgpack.packb([1, "barrier", b"", 0, {}, [], {}], use_bin_type=True),
           5: old_update("a", 3)}                          # index 4: a Raft no-op
    replayed = make()
    for index, raw in log.items():
        replayed.apply_at(index, raw)
    late = make()                                           # an old dump at index 3
    late.load_body({"data": {"a": [encode_value("a", 1), 1], "b": [encode_value("b", 2), 2]},
                    "applied_index": 3, "sessions": []})
    late.apply_at(5, log[5])
    assert replayed.revision == late.revision == 5
    assert replayed.state_hash() == late.state_hash()
    new = upd(c=1).encode()
    assert replayed.apply_at(6, new) == late.apply_at(6, new) == ("ok", 6, 6)
