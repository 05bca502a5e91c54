"""The Proposer's outcome rules, against a model, with a scripted node.

The node double answers each proposal with the next scripted PySyncObj outcome (on the
proposing thread, as PySyncObj does for QUEUE_FULL), or never answers once the script ends.
Real-process behaviour is covered in tests/consensus/test_overload.py.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysyncobj.config import FAIL_REASON

from hastate.consensus.backpressure import Admission
from hastate.errors import NoQuorumError, OverloadedError, WriteError, WriteTimeoutError
from hastate.state.codec import Command
from hastate.writes import Proposer

OUTCOMES = [FAIL_REASON.SUCCESS, FAIL_REASON.QUEUE_FULL, FAIL_REASON.LEADER_CHANGED,
            FAIL_REASON.NOT_LEADER, FAIL_REASON.DISCARDED]


class ScriptedNode:
    def __init__(self, script: list[int], leader: str | None = "n1") -> None:
        self.script = list(script)
        self.proposed: list[bytes] = []
        self.leader = leader
        self.silent: list[Callable[[Any, int], None]] = []
        self.epoch: int | None = None   # None: this node does not lead

    def propose(self, raw: bytes, callback: Callable[[Any, int], None], *,
                alone: bool = False) -> None:
        self.proposed.append(raw)
        if not self.script:
            self.silent.append(callback)
            return
        error = self.script.pop(0)
        callback(("ok", 7) if error == FAIL_REASON.SUCCESS else None, error)

    def leader_id(self) -> str | None:
        return self.leader

    def leaderless_for(self) -> float:
        return 0.0 if self.leader else 100.0

    def leading_epoch(self) -> int | None:
        return self.epoch


def make(node: ScriptedNode, *, entries: int = 100,
         observed: list | None = None) -> Proposer:
    seq = iter(range(1, 10**6))
    return Proposer(node, Admission(entries, 10**6), client_id=b"c" * 16,
                    next_seq=lambda: next(seq), observers=[] if observed is None else [
                        lambda op, _s, outcome: observed.append((op, outcome))],
                    attempt_timeout=0.15, leaderless_give_up=1.0, instance_id="n1")


def model(script: list[int]) -> tuple[type, bool | None]:
    """What the future must hold: (result or error class, outcome_unknown)."""
    maybe = False
    for error in script:
        if error == FAIL_REASON.SUCCESS:
            return tuple, None
        if error == FAIL_REASON.QUEUE_FULL and not maybe:
            return OverloadedError, False
        if error not in (FAIL_REASON.QUEUE_FULL, FAIL_REASON.NOT_LEADER):
            maybe = True
    return WriteTimeoutError, True  # the last attempt is never answered


@given(st.lists(st.sampled_from(OUTCOMES), max_size=4))
@settings(max_examples=25, deadline=None)
def test_outcome_matches_the_model(script: list[int]) -> None:
    node = ScriptedNode(script)
    proposer = make(node)
    try:
        future = proposer.submit(Command(op="update", values={"k": b"\x01"}), timeout=0.6)
        kind, unknown = model(script)
        if kind is tuple:
            assert future.result(5) == ("ok", 7)
        else:
            exc = future.exception(5)
            assert type(exc) is kind and exc.outcome_unknown is unknown
        # Every attempt proposed the very same command: same client id and sequence.
        assert len(set(node.proposed)) == 1
        assert proposer.admission.entries == 0
    finally:
        proposer.close()


def test_full_admission_refuses_without_proposing() -> None:
    node = ScriptedNode([])
    observed: list = []
    proposer = make(node, entries=2, observed=observed)
    try:
        first = [proposer.submit(Command(op="update", values={"k": b"\x01"}), 5.0)
                 for _ in range(2)]
        refused = proposer.submit(Command(op="delete", keys=("k",)), 5.0)
        exc = refused.exception(0)
        assert isinstance(exc, OverloadedError) and not exc.outcome_unknown
        assert 0 < exc.retry_after <= 1.0
        assert len(node.proposed) == 2 and ("delete", "overloaded") in observed
        for callback in node.silent:   # the two in flight complete: room again
            callback(("ok", 3), FAIL_REASON.SUCCESS)
        assert [f.result(1) for f in first] == [("ok", 3), ("ok", 3)]
        assert proposer.submit(Command(op="update", values={"k": b"\x02"}), 5.0).running()
    finally:
        proposer.close()


def test_finish_errors_reach_the_future_and_a_late_success_of_an_old_attempt_counts() -> None:
    node = ScriptedNode([])
    proposer = make(node)
    try:
        future = proposer.submit(Command(op="cas", values={"k": b"\x01"}, expected={"k": 0}),
                                 5.0, finish=lambda r: (_ for _ in ()).throw(KeyError(r[1])))
        threading.Event().wait(0.3)  # the first attempt times out; a second is proposed
        assert len(node.silent) >= 2
        node.silent[0](("conflict", "k", 0, 4), FAIL_REASON.SUCCESS)
        assert isinstance(future.exception(1), KeyError)
    finally:
        proposer.close()


def test_leaderless_node_gives_up_with_no_quorum_and_close_fails_the_rest() -> None:
    node = ScriptedNode([], leader=None)
    proposer = make(node)
    future: Future = proposer.submit(Command(op="update", values={"k": b"\x01"}), 30.0)
    exc = future.exception(5)
    assert isinstance(exc, NoQuorumError) and exc.outcome_unknown
    node.leader = "n1"
    pending = proposer.submit(Command(op="update", values={"k": b"\x01"}), 30.0)
    proposer.close()
    with pytest.raises(WriteError):
        pending.result(1)


def test_a_steady_leader_does_not_propose_an_unanswered_write_again() -> None:
    """On a node that has led since the proposal, PySyncObj will answer: no duplicate."""
    node = ScriptedNode([])
    node.epoch = 3
    proposer = make(node)
    try:
        future = proposer.submit(Command(op="update", values={"k": b"\x01"}), 0.6)
        threading.Event().wait(0.4)            # past the 0.15 s attempt timeout
        assert len(node.proposed) == 1
        node.epoch = 4                          # it stopped leading in between
        exc = future.exception(5)
        assert len(node.proposed) >= 2 and isinstance(exc, WriteTimeoutError)
        assert exc.outcome_unknown
    finally:
        proposer.close()
