"""Property: a transaction on etcd does what hastate's pure transaction model says.

Random initial states and random transactions (every compare target and operator, value
compares across types, every op kind) run through a bot on a real etcd; the model
(:func:`hastate.state.txn.run` on the records the bot saw before) must give the same branch,
the same responses and the same records after.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hastate import StateManager
from hastate.errors import TxnError
from hastate.state import txn
from hastate.testing.etcd import EtcdCluster, write_cluster_file

NAMES = ["a", "b", "c"]
VALUES = st.one_of(st.integers(-2, 2), st.sampled_from([1.0, 0.5]), st.sampled_from(["x", "y"]),
                   st.none())
_examples = itertools.count()


@pytest.fixture(scope="module")
def bot(etcd_store: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = write_cluster_file(tmp_path_factory.mktemp("model") / "cluster.toml",
                                etcd_store.endpoints, name="txn-model", ids=("instance-1",))
    sm = StateManager.from_config(config, "instance-1", serve_http=False).start()
    yield sm
    sm.stop()


@st.composite
def transactions(draw: st.DrawFn) -> dict[str, Any]:
    initial = draw(st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=3))
    compares = draw(st.lists(st.tuples(
        st.sampled_from(NAMES), st.sampled_from(txn.TARGETS), st.sampled_from(txn.OPERATORS),
        VALUES, st.integers(0, 3)), max_size=3))
    ops = st.lists(st.tuples(st.sampled_from(txn.OP_KINDS), st.sampled_from(NAMES + [""]),
                             VALUES), max_size=4)
    return {"initial": initial, "compares": compares, "success": draw(ops),
            "failure": draw(ops)}


def build_ops(prefix: str, drawn: list[tuple]) -> list[txn.Op]:
    out = []
    for kind, name, value in drawn:
        if kind.endswith("_prefix"):
            out.append(getattr(txn, kind)(prefix + name))
        elif name:
            out.append(txn.put(prefix + name, value) if kind == "put"
                       else getattr(txn, kind)(prefix + name))
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=transactions())
def test_a_transaction_matches_the_pure_model(bot: StateManager, case: dict[str, Any]) -> None:
    prefix = f"m{next(_examples)}/"
    if case["initial"]:
        bot.save_state({prefix + k: v for k, v in case["initial"].items()})
    before = bot.records([prefix + n for n in NAMES])
    revisions = sorted({r[1] for r in before.values()} | {r[2] for r in before.values()})
    compares = []
    for name, target, operator, value, pick in case["compares"]:
        operand = value if target == "value" else pick if target == "version" else \
            (revisions[pick % len(revisions)] + pick // 2 if revisions and pick else 0)
        compares.append(txn.Compare(prefix + name, target, operator, operand))
    success, failure = build_ops(prefix, case["success"]), build_ops(prefix, case["failure"])
    try:
        wire = txn.build(compares, success, failure)
    except TxnError:
        assume(False)
        return
    done = bot.transaction(compares, success, failure)
    parsed = txn.parse(wire)
    ok, writes, responses = txn.run(before, *parsed, done.revision)
    expected = txn.to_result(("txn", ok, done.revision, responses), success, failure)
    assert done.succeeded == expected.succeeded
    assert done.responses == expected.responses
    after = dict(before)
    for key, record in writes.items():
        if record is None:
            after.pop(key, None)
        else:
            after[key] = record
    assert bot.records([prefix + n for n in NAMES]) == after
