"""Pair registers (two keys changed by one transaction) under the linearizability checker."""

from __future__ import annotations

import itertools

from .checkers import check_durability
from .history import F, History, Outcome
from .linearizability import Verdict, check_history
from .node_main import pair_value, with_pair_registers


def history_of(reads: list) -> list:
    clock = itertools.count(0, 10)
    history = History(clock=lambda: next(clock))
    op = history.invoke("c0", "g0k0~pair", F.WRITE, ["c0-1", "c0-1"])
    history.complete(op, Outcome.OK)
    for value in reads:
        op = history.invoke("c1", "g0k0~pair", F.READ)
        history.complete(op, Outcome.OK, value)
    return history.operations()


def test_whole_pairs_are_linearizable_and_a_torn_read_is_flagged() -> None:
    """Negative control: a transaction seen half applied is a value nobody wrote."""
    assert check_history(history_of([["c0-1", "c0-1"]])).verdict is Verdict.VALID
    assert check_history(history_of([["c0-1", None]])).verdict is Verdict.INVALID


def test_final_state_gains_the_pair_register_values_for_durability() -> None:
    state = {"g0k0~pair/a": "c0-1", "g0k0~pair/b": "c0-1", "g0k1": "x"}
    full = with_pair_registers(state)
    assert full["g0k0~pair"] == ["c0-1", "c0-1"] and full["g0k1"] == "x"
    assert pair_value(None, None) is None
    assert check_durability(history_of([]), full).ok
    assert not check_durability(history_of([]), {**full, "g0k0~pair": ["c0-1", None]}).ok
