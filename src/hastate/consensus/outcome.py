"""What became of a proposal: the consensus layer's own names for PySyncObj's FAIL_REASON.

Callers above ``consensus/`` compare a proposal callback's outcome with these, so they never
import PySyncObj. The values are PySyncObj's (an ``IntEnum`` compares equal to them).
"""

from __future__ import annotations

import enum

from pysyncobj.config import FAIL_REASON


class Outcome(enum.IntEnum):
    """The second argument of a proposal callback."""

    SUCCESS = FAIL_REASON.SUCCESS                  # committed and applied on this node
    QUEUE_FULL = FAIL_REASON.QUEUE_FULL            # the proposal queue was full
    MISSING_LEADER = FAIL_REASON.MISSING_LEADER    # no leader known to forward to
    DISCARDED = FAIL_REASON.DISCARDED              # PySyncObj's guess: may still have applied
    NOT_LEADER = FAIL_REASON.NOT_LEADER            # the receiving node was not leader
    LEADER_CHANGED = FAIL_REASON.LEADER_CHANGED    # may still have applied (defect 6)
    REQUEST_DENIED = FAIL_REASON.REQUEST_DENIED    # refused before it entered the log
    UNKNOWN_OUTCOME = FAIL_REASON.UNKNOWN_OUTCOME  # may still have applied (defect 6)


#: Outcomes after which the command certainly never entered the log (safe to re-propose
#: without it counting as "maybe applied").
NOT_PROPOSED = frozenset({Outcome.QUEUE_FULL, Outcome.MISSING_LEADER, Outcome.NOT_LEADER,
                          Outcome.REQUEST_DENIED})
