"""Group proposals that wait in the queue together into one log entry.

Every log entry costs the same fixed work (PySyncObj's pickled call, the queue drain, a
journal record, the followers' wire check, apply and callbacks), whatever it holds. When the
Raft thread drains the queue and finds several state-machine proposals waiting in a row, it
packs them into one batch command (``state/codec.py`` ``encode_batch``): one entry, applied
in order, each member with its own result, revision and exactly-once identity. All members
share the entry's outcome: they commit together or fail together.

Only what already waits is grouped: a lone proposal goes out as a plain command at once (no
timer, so a sequential write never waits for company), and a quiet cluster's log is
unchanged. Traced proposals go alone, so each keeps its own entry spans.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from hastate.consensus.outcome import Outcome
from hastate.state.codec import MAX_BATCH_COMMANDS, encode_batch

logger = logging.getLogger(__name__)

#: Most encoded bytes of commands one batch holds; a single larger command goes alone.
#: Half of PySyncObj's ``appendEntriesBatchSizeBytes`` (64 KiB): its pickle of the call may
#: double non-ASCII bytes, and an entry of that size leaves the normal append path for
#: PySyncObj's chunked transfer (slow, and a pickle the transport must reassemble).
MAX_BATCH_BYTES = 32 * 1024

#: callback(result, PySyncObj fail reason), as PySyncObj calls it.
Callback = Callable[[Any, int], None]


class Proposal:
    """One state-machine command waiting in the proposal queue; may join a batch."""

    __slots__ = ("raw", "callback")

    def __init__(self, raw: bytes, callback: Callback) -> None:
        self.raw = raw
        self.callback = callback


class Grouper:
    """Turns a run of waiting proposals into the one (command, callback) PySyncObj appends.

    ``encode_call(raw)`` is the PySyncObj command applying ``raw`` through the state
    machine's replicated method (``MachineConsumer.call_bytes``).
    """

    def __init__(self, encode_call: Callable[[bytes], bytes]) -> None:
        self._encode_call = encode_call

    def pack(self, group: list[Proposal]) -> tuple[bytes, Callback]:
        """The command and callback for ``group`` (one proposal: itself, unbatched)."""
        if len(group) == 1:
            return self._encode_call(group[0].raw), group[0].callback
        callbacks = [p.callback for p in group]
        return self._encode_call(encode_batch([p.raw for p in group])), \
            lambda result, error: _fan_out(callbacks, result, error)


def _fan_out(callbacks: list[Callback], result: Any, error: int) -> None:
    """Give each member its own result (success) or the entry's failure."""
    results = result[1] if error == Outcome.SUCCESS else [None] * len(callbacks)
    for callback, member_result in zip(callbacks, results):
        try:
            callback(member_result, error)
        except Exception:  # one member's callback must not cost the others their answer
            logger.exception("proposal callback failed")


def take_group(first: Proposal, peek: Callable[[], Any], pop: Callable[[], Any],
               entries_left: int | None, bytes_left: int) -> list[Proposal]:
    """``first`` plus the proposals right behind it that fit one batch and the budget.

    ``peek`` returns the next queued item (None when empty), ``pop`` removes it. The budget
    (``entries_left`` commands, ``bytes_left`` bytes; None: unbounded) counts ``first``.
    """
    group = [first]
    size = len(first.raw)
    limit = MAX_BATCH_COMMANDS if entries_left is None else min(MAX_BATCH_COMMANDS,
                                                                 entries_left)
    room = MAX_BATCH_BYTES if entries_left is None else min(MAX_BATCH_BYTES, bytes_left)
    while len(group) < limit:
        nxt = peek()
        if type(nxt) is not Proposal or size + len(nxt.raw) > room:
            break
        pop()
        group.append(nxt)
        size += len(nxt.raw)
    return group
