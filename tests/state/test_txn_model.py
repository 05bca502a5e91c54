"""Transactions against a pure-Python model of etcd's semantics, and watch streams of replicas.

The model below is written from the semantics table (docs), independently of
``state/txn.py``: a random history of puts, deletes and transactions must give the model's
results, state, revisions and change events on every replica.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from hastate.errors import (TxnDuplicateKeyError, TxnInvalidError, TxnTooLargeError,
                            TxnTooManyOpsError)
from hastate.state import txn
from hastate.state.codec import Command, encode_value
from hastate.state.machine import ReplicatedState
from hastate.state.watch import WatchHub

KEYS = ["a", "ab", "b", "c/1", "c/2"]
PREFIXES = ["a", "c/", "z", ""]


class Model:
    """etcd v3 semantics on a dict: key -> {value, mod, create, version}."""

    def __init__(self) -> None:
        self.kv: dict[str, dict[str, Any]] = {}
        self.revision = 0
        self.events: list[tuple] = []

    def _compare(self, c: txn.Compare) -> bool:
        rec = self.kv.get(c.key)
        if c.target == "value":
            if rec is None:
                return False
            actual = rec["value"]
        else:
            actual = rec[{"mod_revision": "mod", "create_revision": "create",
                          "version": "version"}[c.target]] if rec else 0
        compare = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b,
                   "<": lambda a, b: a < b, ">": lambda a, b: a > b}[c.operator]
        try:
            return bool(compare(actual, c.operand))
        except TypeError:
            return False

    def txn(self, compare: list, success: list, failure: list) -> tuple:
        ok = all(self._compare(c) for c in compare)
        new = {k: dict(v) for k, v in self.kv.items()}
        rev = self.revision + 1
        events: list[tuple] = []
        responses: list[Any] = []
        for op in success if ok else failure:
            if op.kind == "put":
                old = new.get(op.key)
                new[op.key] = {"value": op.value, "mod": rev,
                               "create": old["create"] if old else rev,
                               "version": old["version"] + 1 if old else 1}
                events.append(("put", op.key, rev, op.value,
                               old["value"] if old else None))
                responses.append(None)
            elif op.kind in ("delete", "delete_prefix"):
                gone = [k for k in sorted(new) if (k == op.key if op.kind == "delete"
                                                    else k.startswith(op.key))]
                for k in gone:
                    events.append(("delete", k, rev, None, new.pop(k)["value"]))
                responses.append(len(gone))
            elif op.kind == "get":
                rec = new.get(op.key)
                responses.append(None if rec is None else
                                 (op.key, rec["value"], rec["create"], rec["mod"], rec["version"]))
            else:
                responses.append([(k, r["value"], r["create"], r["mod"], r["version"])
                                  for k, r in sorted(new.items()) if k.startswith(op.key)])
        if events:
            self.revision = rev
            self.kv = new
            self.events += events
        return ok, self.revision, responses


def make() -> tuple[ReplicatedState, WatchHub]:
    machine = ReplicatedState()
    machine._syncObj = SimpleNamespace(raftLastApplied=0)
    hub = WatchHub(history=1000)
    machine.add_change_listener(hub)
    return machine, hub


def apply(machine: ReplicatedState, command: Command) -> tuple:
    machine._syncObj.raftLastApplied += 1
    return machine.apply_at(machine._syncObj.raftLastApplied, command.encode())


values = st.one_of(st.integers(-5, 5), st.sampled_from(["x", "y"]), st.none())
targets = st.sampled_from(["version", "create_revision", "mod_revision"])
compares = st.one_of(
    st.builds(lambda k, op, v: txn.Compare(k, "value", op, v), st.sampled_from(KEYS),
              st.sampled_from(txn.OPERATORS), values),
    st.builds(txn.Compare, st.sampled_from(KEYS), targets, st.sampled_from(txn.OPERATORS),
              st.integers(0, 12)),
)
ops = st.one_of(
    st.builds(txn.put, st.sampled_from(KEYS), values),
    st.builds(txn.delete, st.sampled_from(KEYS)),
    st.builds(txn.delete_prefix, st.sampled_from(PREFIXES)),
    st.builds(txn.get, st.sampled_from(KEYS)),
    st.builds(txn.get_prefix, st.sampled_from(PREFIXES)),
)


def _valid_branch(branch: list) -> bool:
    try:
        txn.build([], branch, [])
        return True
    except TxnDuplicateKeyError:
        return False


branches = st.lists(ops, max_size=5).filter(_valid_branch)
steps = st.one_of(
    st.tuples(st.just("txn"), st.lists(compares, max_size=3), branches, branches),
    st.tuples(st.just("update"), st.dictionaries(st.sampled_from(KEYS), values, min_size=1)),
    st.tuples(st.just("delete"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=3)),
    st.tuples(st.just("barrier")),
)


def as_tuple(kv: txn.KeyValue | None) -> tuple | None:
    return None if kv is None else (kv.key, kv.value, kv.create_revision, kv.mod_revision,
                                    kv.version)


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, max_size=25))
def test_transactions_match_the_model_and_replicas_stream_the_same_events(history) -> None:
    """Results, state, revisions and every replica's watch stream equal the model's."""
    model = Model()
    replicas = [make(), make()]
    watchers = [hub.watch("", 1, prev_value=True) for _, hub in replicas]
    for step in history:
        if step[0] == "txn":
            _, compare, success, failure = step
            command = Command(op="txn", txn=txn.build(compare, success, failure))
            results = [txn.to_result(apply(m, command), success, failure) for m, _ in replicas]
            ok, revision, responses = model.txn(compare, success, failure)
            for result in results:
                assert (result.succeeded, result.revision) == (ok, revision)
                got = [as_tuple(r) if op.kind == "get" else
                       [as_tuple(x) for x in r] if op.kind == "get_prefix" else r
                       for op, r in zip(success if ok else failure, result.responses)]
                assert got == responses
        elif step[0] == "update":
            command = Command(op="update", values={k: encode_value(k, v)
                                                   for k, v in step[1].items()})
            model.txn([], [txn.put(k, v) for k, v in step[1].items()], [])
            for m, _ in replicas:
                assert apply(m, command)[1] == model.revision
        elif step[0] == "delete":
            keys = list(dict.fromkeys(step[1]))
            model.txn([], [txn.delete(k) for k in keys], [])
            for m, _ in replicas:
                assert apply(m, Command(op="delete", keys=tuple(step[1])))[1] == model.revision
        else:
            for m, _ in replicas:
                apply(m, Command(op="barrier"))
    for machine, _ in replicas:
        assert machine.revision == model.revision
        assert machine.snapshot() == {k: r["value"] for k, r in model.kv.items()}
        assert {k: rec[1:] for k, rec in machine.records(model.kv).items()} == \
            {k: (r["mod"], r["create"], r["version"]) for k, r in model.kv.items()}
    assert replicas[0][0].state_hash() == replicas[1][0].state_hash()
    for watcher in watchers:
        stream = []
        while (event := watcher.get(timeout=0)) is not None:
            stream.append((event.type, event.key, event.revision, event.value,
                           event.prev_value))
        assert stream == model.events


def test_a_retried_transaction_applies_once_and_returns_the_first_result() -> None:
    m, hub = make()
    wire = txn.build([txn.missing("k")], [txn.put("k", 1)], [txn.get("k")])
    command = Command(op="txn", client=b"bot", seq=9, txn=wire)
    first = apply(m, command)
    again = apply(m, command)                  # the same (client, seq) proposed again
    assert first == again == ("txn", True, 1, [None])
    assert m.revision == 1 and hub.revision == 1


def test_missing_key_compares_as_zero_and_value_compare_on_it_fails() -> None:
    m, _ = make()
    create = Command(op="txn", txn=txn.build([txn.missing("k")], [txn.put("k", 1)], []))
    assert apply(m, create)[:3] == ("txn", True, 1)
    assert apply(m, create)[:3] == ("txn", False, 1)          # exists now: failure branch
    for op in ("=", "!=", "<", ">"):
        w = txn.build([txn.Compare("nope", "value", op, 1)], [txn.put("x", 1)], [])
        assert apply(m, Command(op="txn", txn=w))[1] is False
    w = txn.build([txn.version("nope") == 0, txn.mod_revision("nope") < 1], [txn.put("x", 1)], [])
    assert apply(m, Command(op="txn", txn=w))[1] is True


def test_incomparable_values_make_an_ordering_compare_false() -> None:
    m, _ = make()
    apply(m, Command(op="update", values={"k": encode_value("k", "text")}))
    for op in ("<", ">"):
        w = txn.build([txn.Compare("k", "value", op, 3)], [txn.put("x", 1)], [])
        assert apply(m, Command(op="txn", txn=w))[1] is False


def test_a_txn_that_changes_nothing_keeps_the_revision() -> None:
    m, hub = make()
    apply(m, Command(op="update", values={"a": encode_value("a", 1)}))
    w = txn.build([], [txn.get("a"), txn.delete("zz"), txn.delete_prefix("q")], [])
    assert apply(m, Command(op="txn", txn=w))[:3] == ("txn", True, 1)
    assert m.revision == 1 and hub.revision == 1


class TestLimits:
    def test_too_many_ops_per_branch_and_compares(self) -> None:
        with pytest.raises(TxnTooManyOpsError, match="success branch has 129 ops.*128"):
            txn.build([], [txn.get("k")] * 129, [])
        with pytest.raises(TxnTooManyOpsError, match="3 compares.*limit of 2"):
            txn.build([txn.exists("a")] * 3, [], [], max_ops=2)
        txn.build([], [txn.get("k")] * 128, [txn.get("k")] * 128)   # each branch on its own

    def test_a_key_modified_twice_is_refused(self) -> None:
        with pytest.raises(TxnDuplicateKeyError, match="puts 'k' twice"):
            txn.build([], [txn.put("k", 1), txn.put("k", 2)], [])
        with pytest.raises(TxnDuplicateKeyError, match="puts and deletes 'k'"):
            txn.build([], [txn.delete("k"), txn.put("k", 2)], [])
        with pytest.raises(TxnDuplicateKeyError, match="puts and deletes 'c/1'"):
            txn.build([], [txn.put("c/1", 2), txn.delete_prefix("c/")], [])
        txn.build([], [txn.put("k", 1)], [txn.put("k", 2)])           # different branches

    def test_byte_cap(self) -> None:
        with pytest.raises(TxnTooLargeError, match="more than the cap of 1000"):
            txn.build([], [txn.put("k", "x" * 2000)], [], max_bytes=1000)

    def test_malformed_parts_are_named(self) -> None:
        with pytest.raises(TxnInvalidError, match="target 'lease'"):
            txn.build([txn.Compare("k", "lease", "=", 1)], [], [])
        with pytest.raises(TxnInvalidError, match="operator '>='"):
            txn.build([txn.Compare("k", "version", ">=", 1)], [], [])
        with pytest.raises(TxnInvalidError, match="needs an int >= 0"):
            txn.build([txn.version("k") == "1"], [], [])
        with pytest.raises(TxnInvalidError, match="non-empty str key"):
            txn.build([], [txn.put("", 1)], [])
        with pytest.raises(TxnInvalidError, match="cannot be stored"):
            txn.build([], [txn.put("k", {1, 2})], [])

    def test_a_malformed_wire_txn_is_refused_by_apply_without_changes(self) -> None:
        m, _ = make()
        result = apply(m, Command(op="txn", txn={"success": [["put", "k"]]}))
        assert result[0] == "invalid" and m.revision == 0 and m.snapshot() == {}
