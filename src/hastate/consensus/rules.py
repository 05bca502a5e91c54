"""Raft decisions that are pure functions of numbers, kept apart from PySyncObj's state.

``consensus/raft.py`` reads PySyncObj's attributes and calls these; each is unit- and
property-tested on its own (tests/consensus/test_rules.py). No clock, no I/O, no PySyncObj.
A log position is ``(term, index)``, compared as a tuple: Raft's "at least as up to date".
"""

from __future__ import annotations

from typing import Callable, Collection

#: The term of the entry at an index in this node's log, or None when it holds no such entry.
TermAt = Callable[[int], "int | None"]


def log_up_to_date(candidate: tuple[int, int], own: tuple[int, int]) -> bool:
    """Raft's voting rule (section 5.4.1): the candidate's last (term, index) is at least ours."""
    return candidate >= own


def grants_prevote(*, leader: bool, term: int, current_term: int, sticky_allows: bool,
                   candidate_last: tuple[int, int], own_last: tuple[int, int]) -> bool:
    """Whether a node grants a pre-vote for ``term`` (defect 13); granting changes nothing.

    Never as leader; only for a term newer than ours; only when stickiness allows a vote (no
    leader heard within the minimum election timeout, defect 5) and the candidate's log is
    at least as up to date as ours.
    """
    return (not leader and term > current_term and sticky_allows and
            log_up_to_date(candidate_last, own_last))


def has_majority(granted: Collection[str], voters: Collection[str]) -> bool:
    """More than half of ``voters`` are in ``granted`` (grants from non-voters do not count)."""
    return len(set(granted) & set(voters)) * 2 > len(voters)


def conflict_hint(index: int, commit_index: int, term_at: TermAt) -> int:
    """Where the leader should retry after a term mismatch at ``index`` (defect 11).

    The first index of our conflicting term, but never at or below our commit index
    (committed entries match the leader's): the leader skips a whole term per round trip
    instead of walking back one entry at a time. ``term_at(index)`` must exist.
    """
    term = term_at(index)
    floor = commit_index + 1
    while index > floor:
        before = term_at(index - 1)
        if before is None or before != term:
            break
        index -= 1
    return max(index, floor)


def clamp_next_index(hint: int, current: int | None) -> int:
    """Leader: the nextIndex a failure reply may set; it only ever moves back (defect 11).

    Replies to the batches of one burst disagree ("mismatch at N", then "no entry at N+1");
    taking each as is flips nextIndex between N and N+1 forever.
    """
    return current if current is not None and hint > current else hint


def next_index_after_ack(acked_next: int, current: int | None) -> int:
    """Leader: nextIndex after a success reply; it never moves back (defect 2).

    Batches sent after the acknowledged one are still in flight: sending them again for every
    ack multiplied what a pipelined leader sent by the depth of its pipeline. A batch that
    really was lost is sent again when the follower's failure reply (a gap) moves nextIndex
    back, or when the window stays unacknowledged for an election timeout.
    """
    return acked_next if current is None or acked_next > current else current


def dump_is_stale(dump_index: int, dump_term: int, commit_index: int,
                  term_at_dump: int | None) -> bool:
    """A dump sent by the leader ends at an entry we committed or hold (defect 2, Raft section 7).

    Such a snapshot is ignored and the log after it kept; PySyncObj resets the log to it,
    moving a caught-up follower backwards. ``term_at_dump`` is our term at ``dump_index``.
    """
    return dump_index <= commit_index or term_at_dump == dump_term


def send_window(acked: int, next_index: int, first_index: int, window: int) -> int | None:
    """Leader: the last index it may send a follower now, or None for no cap (flow control).

    At most ``window`` entries past the follower's last ack. No cap before the term's first
    ack (``acked`` 0) or while a dump is due (``next_index`` at or below the log's start):
    those must not stall.
    """
    return acked + window if acked > 0 and next_index > first_index else None


def follower_commit(commit_index: int, leader_commit: int, verified: int) -> int:
    """A follower's new commit index: the leader's, but never past what it verified it holds."""
    return min(leader_commit, verified) if leader_commit > commit_index else commit_index


def compaction_due(*, applied: int, last_dumped: int, now: float, last_dump_time: float,
                   min_entries: int, min_seconds: float, forced: bool) -> bool:
    """Whether to start a log compaction (defect 9).

    Counts entries applied since the last dump, not the log's length: under pipelined load
    the unapplied tail alone can exceed the threshold, and compaction (which can only drop
    applied entries) would then run back to back.
    """
    return (applied - last_dumped > min_entries or now - last_dump_time > min_seconds or
            forced)


def commit_after_dump(commit_index: int, dump_index: int, last_log_index: int) -> int:
    """Commit index after loading a dump: everything in a dump was applied, hence committed;
    never past the log's end (defect 1)."""
    return min(max(commit_index, dump_index), last_log_index)
