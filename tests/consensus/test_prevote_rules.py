"""Who grants a pre-vote: the same rule as a vote (newer term, log at least as up to date,
no leader heard within the minimum election timeout), and granting changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

from hastate import StateManager
from hastate.testing import free_port

from .conftest import on_tick_thread


def test_prevote_is_granted_only_like_a_vote_and_changes_no_state(tmp_path: Path) -> None:
    peers = {f"n{i}": f"127.0.0.1:{free_port()}" for i in range(1, 4)}   # n2, n3 never run
    sm = StateManager("n1", peers, data_dir=tmp_path / "n1", cluster_name="prevote").start()
    try:
        so = sm.node.syncobj
        candidate = next(n for n in so.otherNodes if n.id == peers["n2"])

        def asks(term: int, last_index: int, last_term: int) -> bool:
            return on_tick_thread(sm, lambda: so._grants_prevote(candidate, {
                "term": term, "last_log_index": last_index, "last_log_term": last_term}))

        def mine() -> tuple[int, int, int]:
            return on_tick_thread(sm, lambda: (so.raftCurrentTerm, so.last_log_index(),
                                               so._SyncObj__raftLog[-1][2]))

        term, index, log_term = mine()
        assert not asks(term + 1, index, log_term)   # just started: may have acked a lease
        time.sleep(sm.spec.profile.min_timeout)
        term, index, log_term = mine()
        assert asks(term + 1, index, log_term)
        assert asks(term + 1, index + 5, log_term)
        assert not asks(term + 1, index - 1, log_term)          # shorter log
        assert not asks(term, index, log_term)                  # not a newer term
        on_tick_thread(sm, so.stickiness.heard_from_leader)
        assert not asks(term + 1, index, log_term)              # a leader was just heard
        assert mine()[0] == term                                # granting changed no term
    finally:
        sm.stop()
