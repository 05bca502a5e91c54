"""The leader-lease rules of the Firestore engine under random schedules, on a fake clock.

Three :class:`Leadership` instances share one in-memory lease document and one clock; a
schedule (hypothesis) lets them run rounds, pause (a frozen process runs no round), hand
over and stop, with time passing inside every read and commit. The model checks the two
promises: the intervals in which instances may act (from when ``is_leader()`` first became
True to the deadline it had) never overlap between two instances, and the fencing token
grows with every change of holder. A negative control drops the take-over wait and must be
caught.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hastate.engines.firestore import leadership as leadership_mod
from hastate.engines.firestore.leadership import Leadership, LeaseDoc
from hastate.engines.firestore.settings import parse
from hastate.engines.firestore.store import Costs
from hastate.errors import FailoverError

IDS = ["a", "b", "c"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Snap:
    def __init__(self, doc: dict[str, Any] | None) -> None:
        self.exists = doc is not None
        self._doc = doc

    def to_dict(self) -> dict[str, Any]:
        return dict(self._doc or {})


class Store:
    """One lease document; each read and each commit takes ``delay()`` seconds."""

    def __init__(self, clock: Clock, delays: list[float]) -> None:
        self.clock, self.delays = clock, delays
        self.doc: dict[str, Any] | None = None
        self.costs = Costs()
        self.leader_ref = self

    def _pass(self) -> None:
        self.clock.now += self.delays.pop() if self.delays else 0.01

    def get(self, **_: Any) -> Snap:
        self._pass()
        return Snap(self.doc)

    def run(self, _op: str, body: Any, *, deadline: float, read_only: bool = False) -> Any:
        writes: list[dict[str, Any]] = []
        tx = type("Tx", (), {"set": lambda _self, _ref, fields: writes.append(fields)})()
        out = body(tx)
        self._pass()
        if writes:
            self.doc = writes[-1]
        return out


actions = st.lists(st.tuples(st.sampled_from(["step", "step", "step", "wait", "handover"]),
                             st.sampled_from(IDS), st.floats(0.0, 3.0)), min_size=5,
                   max_size=60)


def simulate(schedule: list[tuple[str, str, float]], delays: list[float]) -> list[tuple]:
    """Run the schedule; returns (instance, token, start, end) acting intervals."""
    clock = Clock()
    store = Store(clock, list(delays))
    cfg = parse({"project": "p", "lease_ttl": "2s"}, cluster="m", path=None)
    nodes = {i: Leadership(store, i, cfg, clock=clock) for i in IDS}   # type: ignore[arg-type]
    acting: dict[tuple[str, int], list[float]] = {}
    open_spans: dict[str, tuple[str, int]] = {}

    def observe() -> None:
        """After each action: who may act now, until when (a step-down closes a span)."""
        for i, node in nodes.items():
            token = node.fencing_token()
            if i in open_spans and open_spans[i] != (i, token):
                span = acting[open_spans.pop(i)]
                span[1] = min(span[1], clock.now)
            if token is not None:
                span = acting.setdefault((i, token), [clock.now, node._deadline])
                span[1] = max(span[1], node._deadline)
                open_spans[i] = (i, token)

    for action, who, seconds in schedule:
        if action == "step":
            nodes[who].step()
        elif action == "wait":                    # everyone frozen, time passes
            clock.now += seconds
        else:
            leader = next((i for i, n in nodes.items() if n.is_leader()), None)
            if leader is not None and leader != who:
                try:
                    nodes[leader].transfer(who, timeout=0.0)
                except FailoverError:
                    pass                         # the target takes it at its next round
        observe()
    return [(i, token, a, b) for (i, token), (a, b) in acting.items()]


def check(intervals: list[tuple]) -> None:
    for n, (i, ti, a1, b1) in enumerate(intervals):
        for j, tj, a2, b2 in intervals[n + 1:]:
            if i != j:
                assert b1 <= a2 or b2 <= a1, f"{i}@{ti} and {j}@{tj} could both act"
                assert ti != tj, "two holders shared a fencing token"
    by_start = sorted(intervals, key=lambda iv: iv[2])
    tokens = [iv[1] for iv in by_start]
    assert tokens == sorted(tokens), f"fencing tokens went back: {by_start}"


@settings(max_examples=300, deadline=None, database=None)
@given(actions, st.lists(st.floats(0.0, 1.5), max_size=200))
def test_no_two_instances_may_act_at_once_and_tokens_grow(schedule: list, delays: list) -> None:
    check(simulate(schedule, delays))


def test_the_model_catches_a_take_over_that_does_not_wait_for_the_ttl(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: with the wait dropped, the second instance takes a live lease."""
    original = Leadership._decide

    def impatient(self: Leadership, doc: LeaseDoc, seen: float, outcome: dict) -> Any:
        self._first_seen = (doc.version, seen - 10 * self.ttl)
        return original(self, doc, seen, outcome)

    monkeypatch.setattr(leadership_mod.Leadership, "_decide", impatient)
    with pytest.raises(AssertionError, match="could both act"):
        check(simulate([("step", "a", 0), ("step", "b", 0)], []))
