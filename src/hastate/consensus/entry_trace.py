"""Spans for traced log entries, timed on the Raft thread (leader and replicas).

A command proposed inside a recording span carries its W3C trace context in ``meta``
(:mod:`hastate.observability.operations`). When tracing is enabled in this process,
``HastateSyncObj`` reports each phase here and, for traced entries only, this module
records the spans after the fact with their real start and end times:

leader: ``hastate.leader.commit`` (enqueued .. applied; SERVER, child of the proposer's
attempt span) with children ``hastate.queue_wait``, ``hastate.journal.fsync``,
``hastate.replicate`` (sent .. committed by a majority) and ``hastate.apply``.

replica: ``hastate.replica.append`` (received .. applied) with children
``hastate.journal.fsync`` and ``hastate.apply``.

A batch fsync or send serves many entries: each traced entry of the batch gets its own
span with the batch's times and size. With tracing off every hook returns after one
attribute check, and no per-entry object is made; with tracing on, an untraced entry
costs one substring search of its bytes.
"""

from __future__ import annotations

import collections
import pickle
from typing import Any, Callable, Iterable, Mapping

from pysyncobj.config import FAIL_REASON

from hastate.observability import tracing
from hastate.state.codec import Command

#: Bytes every traced command contains (the key of its trace context in ``meta``).
MARKER = b"traceparent"
#: Most traced entries followed at once; beyond it the oldest are dropped (never ended).
MAX_PENDING = 4096
#: Flushes remembered for entries followed after the flush that made them durable.
RECENT_FLUSHES = 256
_REGULAR = 0  # pysyncobj's _COMMAND_TYPE.REGULAR: a @replicated call, pickled


def fail_reason_name(code: int) -> str:
    """PySyncObj's FAIL_REASON code as a lower-case name (``success``, ``not_leader``...)."""
    for name, value in vars(FAIL_REASON).items():
        if value == code and not name.startswith("_"):
            return name.lower()
    return str(code)


def command_meta(entry: bytes) -> dict[str, str]:
    """The ``meta`` of the state command inside a log entry ({} for anything else)."""
    if not entry or entry[0] != _REGULAR:
        return {}
    try:
        call = pickle.loads(entry[1:])
        raw = call[1][0] if isinstance(call, tuple) and len(call) > 1 and call[1] else None
        return Command.decode(raw).meta if isinstance(raw, bytes) else {}
    except Exception:  # not a state command: nothing to trace
        return {}


class _Traced:
    """One traced entry on its way through this node."""

    __slots__ = ("index", "command", "span", "context", "synced", "sent", "committed")

    def __init__(self, index: int, command: bytes, span: Any) -> None:
        self.index = index
        self.command = command
        self.span = span
        self.context = tracing.context_of(span)
        self.synced = 0         # when the fsync that made it durable started (0: not yet)
        self.sent = 0           # leader: when the entry was first sent to the followers
        self.committed = False  # leader: replication span recorded


class EntryTraces:
    """Follows traced entries through queue, fsync, replication and apply."""

    def __init__(self, node_id: str, cluster: str,
                 replica_name: Callable[[Any], str] = str) -> None:
        self.node_id = node_id
        self.cluster = cluster
        self._replica_name = replica_name
        #: True while a tracer provider records spans here (refreshed every tick).
        self.active = False
        #: index -> traced entry not applied yet; empty whenever nothing is traced.
        self.pending: dict[int, _Traced] = {}
        self._enqueued: dict[bytes, int] = {}   # leader: queued command -> enqueue time
        # Recent flushes, for entries followed after the flush that made them durable
        # (any flush that runs inside the drain, before on_appended).
        self._flushes: collections.deque[tuple[int, int, int, int, int]] = \
            collections.deque(maxlen=RECENT_FLUSHES)

    def refresh(self) -> None:
        """Tick thread: whether tracing is enabled now."""
        self.active = tracing.enabled()

    def _attributes(self, index: int, term: int, role: str) -> dict[str, Any]:
        return {"db.system.name": tracing.SYSTEM, "db.namespace": self.cluster,
                "hastate.node.id": self.node_id, "hastate.role": role,
                "hastate.log.index": index, "hastate.raft.term": term}

    def _follow(self, entry: tuple, role: str, received: int) -> None:
        command, index, term = entry[0], entry[1], entry[2]
        parent = tracing.extract(command_meta(command))
        if parent is None:
            return
        name = "hastate.leader.commit" if role == "leader" else "hastate.replica.append"
        span = tracing.start_span(name, kind="server" if role == "leader" else "consumer",
                                  parent=parent, start_ns=received,
                                  attributes=self._attributes(index, term, role))
        traced = self.pending[index] = _Traced(index, command, span)
        if len(self.pending) > MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        for flush in reversed(self._flushes):  # a flush inside the drain made it durable
            if flush[2] <= index <= flush[3]:
                self._synced(traced, *flush)
                break

    # -- leader -------------------------------------------------------------------------
    def on_enqueue(self, command: bytes) -> None:
        """Leader, any thread: a command entered the proposal queue (``command`` as queued)."""
        if self.active and MARKER in command:
            if len(self._enqueued) >= MAX_PENDING:
                self._enqueued.clear()
            self._enqueued[command] = tracing.now_ns()

    def on_appended(self, entries: Iterable[tuple]) -> None:
        """Leader: ``entries`` were drained from the queue and appended to the log."""
        entries = [e for e in entries if MARKER in e[0]]
        if not entries:
            return
        appended = tracing.now_ns()
        for entry in entries:
            enqueued = self._enqueued.pop(entry[0], appended)
            self._follow(entry, "leader", enqueued)
            traced = self.pending.get(entry[1])
            if traced is not None and traced.command is entry[0]:
                # Appended before any fsync that covers it began (should a flush run
                # inside the drain).
                tracing.record_span("hastate.queue_wait", parent=traced.context,
                                    start_ns=enqueued, end_ns=min(appended, traced.synced or
                                                                  appended),
                                    attributes={"hastate.batch.size": len(entries)})

    def on_sent(self) -> None:
        """Leader: everything appended so far was sent to the followers."""
        if not self.pending:
            return
        sent = tracing.now_ns()
        for traced in self.pending.values():
            if not traced.sent:
                traced.sent = sent

    def on_commit(self, commit_index: int, match: Mapping[Any, int]) -> None:
        """Leader: the commit index is ``commit_index``; ``match`` = peer -> match index."""
        committed = None
        for traced in self.pending.values():
            if traced.committed or traced.index > commit_index or not traced.sent:
                continue
            committed = committed or tracing.now_ns()
            traced.committed = True
            acked = sorted(self._replica_name(peer) for peer, idx in match.items()
                           if idx >= traced.index)
            tracing.record_span("hastate.replicate", parent=traced.context,
                                start_ns=traced.sent, end_ns=committed,
                                attributes={"hastate.log.index": traced.index,
                                            "hastate.replicas.acked": acked,
                                            "hastate.replicas.total": len(match)})

    # -- replicas -------------------------------------------------------------------------
    def on_received(self, entries: Iterable[tuple]) -> None:
        """Follower: ``entries`` from the leader were appended to this node's log."""
        received = 0
        for entry in entries:
            if MARKER in entry[0]:
                received = received or tracing.now_ns()
                self._follow(entry, "replica", received)

    # -- both -------------------------------------------------------------------------------
    def on_flush(self, started: int, ended: int, first: int, last: int, count: int) -> None:
        """The journal made entries ``first..last`` durable between ``started`` and ``ended``."""
        if not self.active:
            return
        flush = (started, ended, first, last, count)
        self._flushes.append(flush)
        for traced in self.pending.values():
            self._synced(traced, *flush)

    def _synced(self, traced: _Traced, started: int, ended: int, first: int, last: int,
                count: int) -> None:
        if traced.synced or not first <= traced.index <= last:
            return
        traced.synced = started
        tracing.record_span("hastate.journal.fsync", parent=traced.context, start_ns=started,
                            end_ns=ended, attributes={"hastate.batch.size": count})

    def on_apply(self, index: int, command: bytes, started: int, ended: int) -> None:
        """Entry ``index`` (``command``) was applied between ``started`` and ``ended``."""
        traced = self.pending.get(index)
        if traced is None:
            return
        del self.pending[index]
        if traced.command != command:  # replaced after a conflict: not the traced one
            traced.span.set_attribute("hastate.outcome", "truncated")
            traced.span.end(end_time=started)
            return
        tracing.record_span("hastate.apply", parent=traced.context, start_ns=started,
                            end_ns=ended)
        traced.span.end(end_time=ended)
