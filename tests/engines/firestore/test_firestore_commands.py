"""Commands as Firestore transactions: the state machine's semantics, exactly once.

The property test runs random writes and transactions both on the Raft engine's pure state
machine (the model) and as Firestore transactions on the real emulator, and requires the
same result tuples and the same records. The exactly-once tests re-run a committed command
with its client id and sequence number, as a retry after a lost answer does.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hastate.engines.firestore import commands
from hastate.engines.firestore.settings import parse
from hastate.engines.firestore.store import Store, record_of
from hastate.state import txn
from hastate.state.codec import Command, encode_value
from hastate.state.leases import grant_command, keepalive_command, revoke_command
from hastate.state.machine import ReplicatedState
from hastate.testing.firestore import FirestoreEmulator

KEYS = ["a", "a/b", "a/c", "b", "b.c/..", "__x__"]
CLIENT = b"c" * 16


def fresh_store() -> Store:
    """A store under a collection prefix of its own (the emulator is shared)."""
    return Store(parse({"project": "hastate-test"}, cluster=f"p{uuid.uuid4().hex[:12]}",
                       path=None))


def run(store: Store, command: Command) -> tuple:
    return store.run(command.op, lambda tx: commands.execute(store, tx, command),
                     deadline=time.monotonic() + 30).result


def state_of(store: Store) -> dict[str, tuple]:
    return {snap.get("key"): record_of(snap.to_dict()) for snap in store.state.stream()}


values = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none())
keys = st.sampled_from(KEYS)
compares = st.builds(lambda k, t, o, n: txn.Compare(k, t, o, n), keys,
                     st.sampled_from(["version", "mod_revision", "create_revision"]),
                     st.sampled_from(txn.OPERATORS), st.integers(0, 4)) | \
    st.builds(lambda k, o, v: txn.Compare(k, "value", o, v), keys,
              st.sampled_from(txn.OPERATORS), values)
ops = st.one_of(st.builds(txn.put, keys, values), st.builds(txn.delete, keys),
                st.builds(txn.get, keys), st.builds(txn.get_prefix, st.sampled_from(["a", ""])),
                st.builds(txn.delete_prefix, st.sampled_from(["a/", "b"])))


def _txn(cmp: list, success: list, failure: list) -> Command | None:
    try:
        return Command(op="txn", txn=txn.build(cmp, success, failure))
    except txn.TxnDuplicateKeyError:
        return None


commands_st = st.one_of(
    st.builds(lambda kv: Command(op="update", values={k: encode_value(k, v)
                                                      for k, v in kv.items()}),
              st.dictionaries(keys, values, min_size=1, max_size=3)),
    st.builds(lambda ks: Command(op="delete", keys=tuple(ks)),
              st.lists(keys, min_size=1, max_size=2, unique=True)),
    st.builds(lambda k, v, r: Command(op="cas", values={k: encode_value(k, v)},
                                      expected={k: r}), keys, values, st.integers(0, 4)),
    st.builds(_txn, st.lists(compares, max_size=2), st.lists(ops, max_size=3),
              st.lists(ops, max_size=2)),
)


def comparable(result: tuple) -> tuple:
    """("ok", revision, index): the index is the log index on Raft, the revision here."""
    return tuple(result[:2]) if result[0] == "ok" else tuple(result)


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(commands_st, min_size=1, max_size=6))
def test_firestore_transactions_match_the_state_machine(emulator: FirestoreEmulator,
                                                        batch: list[Command | None]) -> None:
    store, model = fresh_store(), ReplicatedState()
    for index, command in enumerate((c for c in batch if c is not None), 1):
        expected = model.apply_at(index, command.encode())
        assert comparable(run(store, command)) == comparable(expected), command
    assert state_of(store) == model.records(KEYS)


def test_a_retried_write_applies_once_and_returns_the_first_result(
        emulator: FirestoreEmulator) -> None:
    store = fresh_store()
    put = Command(op="txn", client=CLIENT, seq=1,
                  txn=txn.build([txn.missing("k")], [txn.put("k", 1)], [txn.get("k")]))
    first = run(store, put)
    again = run(store, put)              # the same client id and seq: a retry
    assert first == again and first[:2] == ("txn", True)
    assert state_of(store)["k"][1:] == (first[2], first[2], 1)
    grant = Command(op="lease_grant", client=CLIENT, seq=2,
                    values=grant_command(5).values)
    assert run(store, grant) == run(store, grant) == ("lease", 1, 5.0)
    assert [s.id for s in store.lease_docs.stream()] == ["1"]
    assert run(store, Command(op="update", client=CLIENT, seq=3,
                              values={"k": encode_value("k", 2)}))[1] == first[2] + 1


def test_leases_end_with_their_keys_and_a_stale_expiry_ends_nothing(
        emulator: FirestoreEmulator) -> None:
    store = fresh_store()
    lease = run(store, grant_command(5))[1]
    attached = run(store, Command(op="txn", txn=txn.build(
        [], [txn.put("held", 1, lease=lease), txn.put("free", 2)], [])))
    assert run(store, Command(op="txn", txn=txn.build([], [txn.put("x", 1, lease=99)], []))) \
        == ("no_lease", 99)
    assert run(store, keepalive_command(lease)) == ("lease", lease, 5.0)
    stale = Command(op="lease_expire", values={"leases": msgpack.packb([[lease, 1]])})
    assert run(store, stale) == ("lease_end", [], attached[2])     # refreshed since
    ended = run(store, revoke_command(lease))
    assert ended == ("lease_end", [lease], attached[2] + 1)
    assert set(state_of(store)) == {"free"}
    assert run(store, keepalive_command(lease)) == ("lease", 0, 0.0)


def test_lock_commands_are_refused_by_the_engine() -> None:
    from hastate.engines.firestore.engine import FirestoreEngine
    from hastate.errors import NotSupportedError
    engine: Any = object.__new__(FirestoreEngine)
    with pytest.raises(NotSupportedError, match="lock_acquire"):
        FirestoreEngine.submit(engine, Command(op="lock_acquire", keys=("n",)), 1.0,
                               lambda r: r)
