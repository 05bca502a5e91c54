"""Found by the fault-injection campaign (seed 20261140, 3 nodes, convergence checker): an
old leader with an uncommitted tail never catches up when the leader it rejoins was
elected *after* the split (here: by a leadership transfer N -> F while it was cut off).

Mechanism (tests/chaos/campaign.py: run_rejoin_scenario keeps the leader's ``nextIndex``
trace): F starts with ``nextIndex[L] = F.last + 1``. L answers the first heartbeat "prev
not found" with ``next_node_idx = L.last + 1``. F then sends one burst of several
append_entries batches from there (PySyncObj's ``__sendAppendEntries`` loop, advancing
``nextIndex`` optimistically). L answers the first batch "term mismatch at L.last" with
``next_node_idx = L.last`` and every later batch "prev not found" with ``L.last + 1``;
the leader's ``next_node_idx`` handler sets ``nextIndex`` to the hint unconditionally
(``reset``), so the last answer wins and ``nextIndex`` oscillates between ``L.last`` and
``L.last + 1`` forever: L stays at its old commit index, idle or not, while reporting
``ready``. In the normal case the new leader's ``nextIndex`` starts at the common prefix,
which is why only a second leader change exposes it.

Fixed in consensus/raft.py: a failure hint may only lower the leader's ``nextIndex``, and a
follower answers a term mismatch with the first index of its conflicting term (above its
commit index). Before the fix this test failed in 8 of 9 runs; see docs/pysyncobj-defects.md.
"""

from __future__ import annotations

from .campaign import run_rejoin_scenario


def test_old_leader_with_uncommitted_tail_rejoins_a_later_leader(
        _stale_namespaces_removed: None) -> None:
    result = run_rejoin_scenario(seed=4, catch_up_timeout=10.0)
    assert result.error is None, result.error
    assert result.converged, (
        f"old leader {result.old_leader} did not catch up with {result.second_successor} "
        f"within 10 s of the heal: digests {result.digests}; leader's next_index "
        f"{(result.diagnostics.get(result.second_successor) or {}).get('next_index')}; "
        f"artifacts {result.artifacts}")
