"""The checkers are only trustworthy if they flag bad histories and pass good ones.

Hand-made histories cover the classic cases; Hypothesis generates histories that are
linearizable by construction (sequential and concurrent), histories with an injected
stale read (never linearizable), and small random histories whose verdict is compared
with a brute-force search over every ordering.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from .checkers import (
    FencedWrite,
    check_convergence,
    check_durability,
    check_fencing,
    check_lease_overlap,
    state_digest,
)
from .history import F, History, Operation, Outcome
from .linearizability import Verdict, check_history, check_key

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN
_ids = itertools.count()


def op(f: F, value: Any, start: int, end: int | None, outcome: Outcome = OK,
       key: str = "x", process: str = "p0") -> Operation:
    """A hand-made operation; ``end=None`` means still in flight."""
    return Operation(id=next(_ids), process=process, key=key, f=f, value=value,
                     invoke_ns=start, complete_ns=end, outcome=outcome)


def verdict(*ops: Operation, initial: Any = None) -> Verdict:
    return check_key("x", ops, initial).verdict


# --------------------------------------------------------------------------- linearizability


def test_stale_read_after_completed_write_is_invalid_and_explained() -> None:
    write = op(F.WRITE, 1, 0, 10)
    stale = op(F.READ, None, 20, 30, process="p1")
    result = check_key("x", [write, stale])
    assert result.verdict is Verdict.INVALID
    assert result.op == stale
    assert result.states == (1,)
    assert f"#{stale.id}" in result.explanation


@pytest.mark.parametrize("seen", [None, 1])
def test_read_concurrent_with_write_may_see_either_value(seen: Any) -> None:
    assert verdict(op(F.WRITE, 1, 0, 10), op(F.READ, seen, 5, 15, process="p1")) is Verdict.VALID


def test_read_of_a_value_never_written_is_invalid() -> None:
    assert verdict(op(F.WRITE, 1, 0, 10), op(F.READ, 2, 5, 15)) is Verdict.INVALID


def test_value_cannot_flip_back_between_sequential_reads() -> None:
    assert verdict(op(F.WRITE, 1, 0, 100), op(F.READ, 1, 10, 20, process="p1"),
                   op(F.READ, None, 30, 40, process="p1")) is Verdict.INVALID


def test_unknown_write_that_appears_later_is_valid() -> None:
    assert verdict(op(F.WRITE, 1, 0, 10, UNKNOWN), op(F.READ, 1, 100, 110)) is Verdict.VALID


def test_unknown_write_that_never_appears_is_valid() -> None:
    assert verdict(op(F.WRITE, 1, 0, 10, UNKNOWN), op(F.READ, None, 100, 110)) is Verdict.VALID


def test_in_flight_write_counts_as_unknown() -> None:
    assert verdict(op(F.WRITE, 1, 0, None, UNKNOWN), op(F.READ, 1, 100, 110)) is Verdict.VALID


def test_unknown_write_once_seen_cannot_be_undone() -> None:
    assert verdict(op(F.WRITE, 1, 0, 10, UNKNOWN), op(F.READ, 1, 100, 110),
                   op(F.READ, None, 200, 210)) is Verdict.INVALID


def test_failed_write_must_not_appear() -> None:
    assert verdict(op(F.WRITE, 1, 0, 10, FAIL), op(F.READ, 1, 100, 110)) is Verdict.INVALID


def test_unknown_read_constrains_nothing() -> None:
    assert verdict(op(F.WRITE, 1, 0, 10), op(F.READ, 42, 20, 30, UNKNOWN)) is Verdict.VALID


def test_cas_chain_is_valid() -> None:
    assert verdict(op(F.WRITE, 0, 0, 10), op(F.CAS, (0, 1), 20, 30), op(F.CAS, (1, 2), 40, 50),
                   op(F.READ, 2, 60, 70)) is Verdict.VALID


def test_cas_with_wrong_expected_value_cannot_succeed() -> None:
    assert verdict(op(F.WRITE, 0, 0, 10), op(F.CAS, (0, 1), 20, 30),
                   op(F.CAS, (0, 2), 40, 50)) is Verdict.INVALID


def test_two_concurrent_cas_from_same_value_cannot_both_succeed() -> None:
    assert verdict(op(F.WRITE, 0, 0, 10), op(F.CAS, (0, 1), 20, 50, process="p1"),
                   op(F.CAS, (0, 2), 20, 50, process="p2")) is Verdict.INVALID


def test_failed_cas_is_ignored() -> None:
    assert verdict(op(F.WRITE, 0, 0, 10), op(F.CAS, (5, 1), 20, 30, FAIL),
                   op(F.READ, 0, 40, 50)) is Verdict.VALID


def test_unknown_cas_must_have_applied_when_its_value_is_built_on() -> None:
    assert verdict(op(F.WRITE, 0, 0, 10), op(F.CAS, (0, 1), 20, 30, UNKNOWN),
                   op(F.CAS, (1, 2), 40, 50), op(F.READ, 2, 60, 70)) is Verdict.VALID


def test_initial_value_is_respected() -> None:
    assert verdict(op(F.READ, 5, 0, 10), initial=5) is Verdict.VALID
    assert verdict(op(F.READ, None, 0, 10), initial=5) is Verdict.INVALID


def test_history_is_checked_per_key() -> None:
    ops = [op(F.WRITE, 1, 0, 10, key="a"), op(F.READ, 1, 20, 30, key="a"),
           op(F.WRITE, 1, 0, 10, key="b"), op(F.READ, 7, 20, 30, key="b")]
    result = check_history(ops)
    assert result.verdict is Verdict.INVALID and not result.valid
    assert result.keys["a"].verdict is Verdict.VALID
    assert result.keys["b"].verdict is Verdict.INVALID
    assert "'b'" in result.summary() and "'a'" not in result.summary()


def test_exhausted_budget_gives_unknown_not_a_hang() -> None:
    # 16 mutually concurrent writes and an impossible read: the search must try every
    # subset of writes before it can say "invalid".
    ops = [op(F.WRITE, v, 0, 100, process=f"p{v}") for v in range(16)]
    ops.append(op(F.READ, -1, 0, 100, process="reader"))
    started = time.monotonic()
    result = check_history(ops, budget_s=0.0)
    assert result.verdict is Verdict.UNKNOWN
    assert result.keys["x"].op is None
    assert time.monotonic() - started < 5


def test_many_unobserved_unknown_writes_do_not_explode_the_search() -> None:
    # 30 timed-out writes, each "observed" only by a timed-out cas whose own value nobody
    # saw, then a stale read: without pruning both (to a fixpoint) the search would visit
    # every subset of the 30 writes before answering.
    ops = [op(F.WRITE, f"lost-{v}", 0, 10, UNKNOWN, process=f"p{v}") for v in range(30)]
    ops += [op(F.CAS, (f"lost-{v}", f"cas-{v}"), 0, 10, UNKNOWN, process=f"q{v}")
            for v in range(30)]
    ops += [op(F.WRITE, "acked", 20, 30), op(F.READ, None, 40, 50)]
    result = check_key("x", ops, budget_s=5.0)
    assert result.verdict is Verdict.INVALID
    assert result.elapsed_s < 1.0


def test_json_round_trip_checks_the_same() -> None:
    ops = [op(F.WRITE, [1, 2], 0, 10), op(F.CAS, ([1, 2], {"a": 1}), 20, 30),
           op(F.READ, {"a": 1}, 40, 50)]
    loaded = History.from_json(History.from_operations(ops).to_json()).operations()
    assert check_history(ops).valid
    assert check_history(loaded).valid
    assert loaded[1].value == [[1, 2], {"a": 1}]


# --------------------------------------------------------------------------- generated histories

_KEYS = ("a", "b")
_VALUES = st.integers(min_value=0, max_value=3)
_ACTIONS = st.tuples(st.sampled_from(_KEYS), st.sampled_from([F.READ, F.WRITE, F.CAS]),
                     _VALUES, _VALUES)


def _run_model(action: tuple[str, F, int, int], state: dict[str, Any]) -> tuple[Any, Outcome]:
    """Apply one action to the model; return (operation value, outcome) as a client sees it."""
    key, f, a, b = action
    if f is F.READ:
        return state.get(key), OK
    if f is F.WRITE:
        state[key] = a
        return a, OK
    if state.get(key) == a:
        state[key] = b
        return (a, b), OK
    return (a, b), FAIL


@given(st.lists(_ACTIONS, max_size=40))
def test_sequential_model_histories_are_linearizable(
        actions: list[tuple[str, F, int, int]]) -> None:
    state: dict[str, Any] = {}
    ops = []
    for t, action in enumerate(actions):
        value, outcome = _run_model(action, state)
        ops.append(op(action[1], value, 10 * t, 10 * t + 5, outcome, key=action[0]))
    assert check_history(ops).valid


@st.composite
def _concurrent_model_history(draw: st.DrawFn) -> list[Operation]:
    """Operations with random overlapping intervals, results computed at a linearization
    point inside each interval; some writes become unknown (applied or not)."""
    actions = draw(st.lists(_ACTIONS, max_size=12))
    timed = []
    for index, action in enumerate(actions):
        start = draw(st.integers(0, 100))
        point = start + draw(st.integers(0, 30))
        end = point + draw(st.integers(0, 30))
        unknown = action[1] is not F.READ and draw(st.booleans())
        applied = not unknown or draw(st.booleans())
        timed.append((point, index, action, start, end, unknown, applied))
    state: dict[str, Any] = {}
    ops = []
    for _, index, action, start, end, unknown, applied in sorted(timed):
        if applied:
            value, outcome = _run_model(action, state)
        else:
            value, outcome = (action[2] if action[1] is F.WRITE else action[2:4]), UNKNOWN
        ops.append(Operation(id=index, process=f"p{index}", key=action[0], f=action[1],
                             value=value, invoke_ns=start, complete_ns=end,
                             outcome=UNKNOWN if unknown else outcome))
    return ops


@given(_concurrent_model_history())
def test_concurrent_model_histories_are_linearizable(ops: list[Operation]) -> None:
    result = check_history(ops)
    assert result.valid, result.summary()


@given(st.lists(_ACTIONS, min_size=2, max_size=40), st.data())
def test_injected_stale_read_is_flagged(actions: list[tuple[str, F, int, int]],
                                        data: st.DataObject) -> None:
    state: dict[str, Any] = {}
    seen: dict[str, list[Any]] = {}
    ops: list[Operation] = []
    stale_reads: list[tuple[int, list[Any]]] = []
    for t, action in enumerate(actions):
        key = action[0]
        value, outcome = _run_model(action, state)
        older = [v for v in seen.get(key, [None]) if v != state.get(key)]
        if action[1] is F.READ and older:
            stale_reads.append((len(ops), older))
        ops.append(op(action[1], value, 10 * t, 10 * t + 5, outcome, key=key))
        seen.setdefault(key, [None]).append(state.get(key))
    assume(stale_reads)
    index, older = data.draw(st.sampled_from(stale_reads))
    victim = ops[index]
    ops[index] = op(F.READ, data.draw(st.sampled_from(older)), victim.invoke_ns,
                    victim.complete_ns, key=victim.key)
    result = check_history(ops)
    assert result.keys[victim.key].verdict is Verdict.INVALID


def _brute_force_linearizable(ops: list[Operation]) -> bool:
    """Try every subset of the optional (unknown) operations in every real-time-respecting
    order: the definition of linearizability, usable for a handful of operations."""
    relevant = [o for o in ops if o.outcome is OK or (o.outcome is UNKNOWN and o.f is not F.READ)]
    required = [o for o in relevant if o.outcome is OK]
    optional = [o for o in relevant if o.outcome is UNKNOWN]

    def end(o: Operation) -> float:
        return math.inf if o.outcome is UNKNOWN else o.complete_ns  # type: ignore[return-value]

    for r in range(len(optional) + 1):
        for extra in itertools.combinations(optional, r):
            for order in itertools.permutations(required + list(extra)):
                if any(end(later) < earlier.invoke_ns
                       for i, earlier in enumerate(order) for later in order[i + 1:]):
                    continue
                state, legal = None, True
                for o in order:
                    if o.f is F.READ:
                        legal = state == o.value
                    elif o.f is F.WRITE:
                        state = o.value
                    else:
                        legal, state = state == o.value[0], o.value[1]
                    if not legal:
                        break
                if legal:
                    return True
    return False


@st.composite
def _random_small_history(draw: st.DrawFn) -> list[Operation]:
    """Up to 6 operations on one key with arbitrary intervals, values and outcomes."""
    ops = []
    for index in range(draw(st.integers(1, 6))):
        f = draw(st.sampled_from([F.READ, F.WRITE, F.CAS]))
        a, b = draw(_VALUES), draw(_VALUES)
        start = draw(st.integers(0, 20))
        ops.append(Operation(id=index, process=f"p{index}", key="x", f=f,
                             value=(a, b) if f is F.CAS else a, invoke_ns=start,
                             complete_ns=start + draw(st.integers(0, 10)),
                             outcome=draw(st.sampled_from([OK, OK, FAIL, UNKNOWN]))))
    return ops


@settings(max_examples=300)
@given(_random_small_history())
def test_agrees_with_brute_force_on_small_histories(ops: list[Operation]) -> None:
    expected = Verdict.VALID if _brute_force_linearizable(ops) else Verdict.INVALID
    assert check_key("x", ops).verdict is expected


# --------------------------------------------------------------------------- durability


def test_acknowledged_write_present_is_durable() -> None:
    ops = [op(F.WRITE, 1, 0, 10), op(F.WRITE, 2, 0, 10, key="y")]
    assert check_durability(ops, {"x": 1, "y": 2}).ok


def test_lost_write_is_a_durability_violation() -> None:
    write = op(F.WRITE, 1, 0, 10)
    result = check_durability([write, op(F.WRITE, 2, 0, 10, key="y")], {"y": 2})
    assert not result.ok
    assert [(lw.key, lw.final, lw.acknowledged) for lw in result.lost] == [("x", None, (write,))]
    assert f"#{write.id}" in result.summary()


def test_value_older_than_last_acknowledged_write_is_a_violation() -> None:
    ops = [op(F.WRITE, 1, 0, 10), op(F.WRITE, 2, 20, 30)]
    assert check_durability(ops, {"x": 2}).ok
    assert not check_durability(ops, {"x": 1}).ok


def test_concurrent_acknowledged_writes_may_end_either_way() -> None:
    ops = [op(F.WRITE, 1, 0, 10), op(F.WRITE, 2, 5, 15, process="p1")]
    assert check_durability(ops, {"x": 1}).ok
    assert check_durability(ops, {"x": 2}).ok


def test_unknown_or_cas_write_may_be_the_final_value() -> None:
    ops = [op(F.WRITE, 1, 0, 10), op(F.WRITE, 3, 20, 30, UNKNOWN), op(F.CAS, (1, 4), 20, 30)]
    for final in (3, 4):
        assert check_durability(ops, {"x": final}).ok
    assert not check_durability(ops, {"x": 1}).ok


def test_unknown_write_may_land_after_a_later_acknowledged_write() -> None:
    # The client gave up at 30, but the write may still apply after the write at 40..50.
    ops = [op(F.WRITE, 3, 20, 30, UNKNOWN), op(F.WRITE, 2, 40, 50)]
    assert check_durability(ops, {"x": 3}).ok


def test_failed_writes_and_unacknowledged_keys_are_not_judged() -> None:
    ops = [op(F.WRITE, 1, 0, 10), op(F.WRITE, 5, 20, 30, FAIL), op(F.WRITE, 9, 0, 10, UNKNOWN,
                                                                    key="y")]
    assert check_durability(ops, {"x": 1}).ok
    assert not check_durability(ops, {"x": 5}).ok


# --------------------------------------------------------------------------- leader leases


def test_touching_lease_intervals_do_not_overlap() -> None:
    result = check_lease_overlap({"n0": [(0, 100), (300, None)], "n1": [(100, 300)]})
    assert result.ok, result.summary()


def test_overlapping_lease_intervals_are_reported() -> None:
    result = check_lease_overlap({"n0": [(0, 100)], "n1": [(90, 200)], "n2": [(500, 600)]})
    assert not result.ok
    (overlap,) = result.overlaps
    assert {overlap.node_a, overlap.node_b} == {"n0", "n1"}
    assert (overlap.start, overlap.end, overlap.duration_ns) == (90, 100, 10)


def test_open_lease_overlaps_every_later_leader() -> None:
    result = check_lease_overlap({"n0": [(0, None)], "n1": [(50, 60)], "n2": [(70, 80)]})
    assert sorted((o.node_a, o.node_b) for o in result.overlaps) == [("n0", "n1"), ("n0", "n2")]


def test_same_node_intervals_are_not_an_overlap() -> None:
    assert check_lease_overlap({"n0": [(0, 100), (50, 150)]}).ok


def test_backwards_lease_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        check_lease_overlap({"n0": [(100, 50)]})


# --------------------------------------------------------------------------- convergence


def test_identical_nodes_converge() -> None:
    digest = state_digest({"a": 1, "b": [1, 2]})
    assert check_convergence({"n0": (7, digest), "n1": (7, digest), "n2": (7, digest)}).ok


def test_diverging_or_lagging_nodes_are_reported() -> None:
    good, bad = state_digest({"a": 1}), state_digest({"a": 2})
    diverged = check_convergence({"n0": (7, good), "n1": (7, good), "n2": (7, bad)})
    assert not diverged.ok
    assert diverged.groups == {(7, good): ("n0", "n1"), (7, bad): ("n2",)}
    assert "n2" in diverged.summary()
    assert not check_convergence({"n0": (7, good), "n1": (6, good)}).ok


def test_state_digest_ignores_insertion_order_only() -> None:
    assert state_digest({"a": 1, "b": {"x": 1, "y": 2}}) == state_digest({"b": {"y": 2, "x": 1},
                                                                           "a": 1})
    assert state_digest({"a": 1}) != state_digest({"a": 2})
    assert state_digest({"a": {"k": 1}}) != state_digest({"a": [("k", 1)]})
    assert state_digest({"a": 1}) != state_digest({"a": 1, "b": None})


# --------------------------------------------------------------------------- fencing


def test_fenced_log_with_rejected_stale_holder_is_safe() -> None:
    log = [FencedWrite("c1", 1, True, 0, 1), FencedWrite("c2", 2, True, 1, 2),
           FencedWrite("c1", 1, False, 0, 1), FencedWrite("c3", 5, True, 2, 3)]
    result = check_fencing(log, initial=0)
    assert result.ok, result.summary()
    assert result.accepted == 3


@pytest.mark.parametrize("stale_token", [1, 2])
def test_accepted_stale_token_is_a_violation(stale_token: int) -> None:
    log = [FencedWrite("c1", 1, True, 0, 1), FencedWrite("c2", 2, True, 1, 2),
           FencedWrite("c1", stale_token, True, 2, 3)]
    result = check_fencing(log, initial=0)
    assert [(v.kind, v.index) for v in result.violations] == [("token", 2)]


def test_lost_update_is_a_violation() -> None:
    # Both holders read 0 and wrote 1: one increment is lost although tokens increase.
    log = [FencedWrite("c1", 1, True, 0, 1), FencedWrite("c2", 2, True, 0, 1)]
    result = check_fencing(log, initial=0)
    assert [(v.kind, v.index) for v in result.violations] == [("lost-update", 1)]
    assert "c2" in result.summary()
