"""PySyncObj's SyncObj, corrected where hastate needs it. The only module that subclasses it.

Each override names the behaviour it adds or the PySyncObj 0.3.17 defect it corrects as
"defect N" (docs/pysyncobj-defects.md; tests/consensus/test_pysyncobj_contract.py checks that
the tags and the document agree). PySyncObj keeps its state in name-mangled attributes
(``_SyncObj__x``), read and overridden only in this file (the same test checks every such
name exists in the pinned PySyncObj); other modules use the public accessors below.
Decisions that are pure functions of numbers live in :mod:`hastate.consensus.rules`.

Length: one subclass of one PySyncObj class, whose overrides share its
name-mangled state; splitting it would spread those private names over several files.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.config import FAIL_REASON
from pysyncobj.syncobj import _RAFT_STATE

from hastate import _malloc
from hastate.consensus import rules
from hastate.consensus.backpressure import EntrySizes, Limits, ProposalQueue, UncommittedTail
from hastate.consensus.entry_trace import EntryTraces
from hastate.consensus.grouping import Callback, Grouper, Proposal
from hastate.consensus.journal import DurableJournal, DurableSerializer
from hastate.consensus.lease import LeaderLease, Stickiness
from hastate.consensus.membership import Change, Member, decode_change
from hastate.consensus.profiles import TimingProfile
from hastate.errors import CorruptDataError, HAStateError
from hastate.observability.tracing import now_ns
from hastate.state.dump import read_header

logger = logging.getLogger(__name__)

PING = "hastate_lease_ping"
PONG = "hastate_lease_pong"
TRANSFER = "hastate_transfer"
TRANSFER_REQUEST = "hastate_transfer_request"
HEALTH = "hastate_health"
PREVOTE = "hastate_prevote"
PREVOTE_REPLY = "hastate_prevote_reply"

ROLE_NAMES = {_RAFT_STATE.FOLLOWER: "follower", _RAFT_STATE.CANDIDATE: "candidate",
              _RAFT_STATE.LEADER: "leader"}


# prepare_dump(last, prev, members) runs on the Raft thread, captures the state cheaply and
# returns the slow part (encode, write, fsync, rename) for a background thread. ``members``
# is the configuration at ``last`` as member dicts.
PrepareDump = Callable[[tuple, tuple, list], Callable[[], None]]


class _Compaction(threading.Thread):
    """Writes one dump in the background; the Raft thread truncates the log when it is done."""

    def __init__(self, write: Callable[[], None], upto: int) -> None:
        super().__init__(name="hastate-compaction", daemon=True)
        self._write = write
        self.upto = upto
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # reported on the Raft thread, which keeps the journal
            self.error = exc


class HastateSyncObj(SyncObj):
    """SyncObj with adaptive batching, leader lease, stickiness and guarded transfers."""

    def __init__(self, self_addr: str, self_id: str, members: Iterable[Member],
                 conf: SyncObjConf, consumers: list[Any],
                 profile: TimingProfile, transport_class: Any = None,
                 on_transfer_request: Callable[[str], None] | None = None,
                 is_healthy: Callable[[], bool] = lambda: True,
                 journal: DurableJournal | None = None,
                 prepare_dump: PrepareDump | None = None, seeded_at: int = 0,
                 cluster: str = "", limits: Limits | None = None,
                 encode_call: Callable[[bytes], bytes] | None = None) -> None:
        self._self_id = self_id
        #: Spans for traced entries (consensus/entry_trace.py); idle while tracing is off.
        self.traces = EntryTraces(self_id, cluster, replica_name=self._peer_id)
        self.limits = limits if limits is not None else Limits()
        self._tail = UncommittedTail()  # leader: bytes appended and not committed
        self._sizes = EntrySizes()  # leader: entry sizes, for the per-follower byte window
        # A restore seeds the log with two no-ops ending at this index, in a stand-in term
        # (the snapshot's), not necessarily the term of the cluster's entries there.
        self._seeded_at = seeded_at
        # The configuration (Raft address -> member), replaced (never mutated) on every
        # change so other threads can read it without a lock. It may lack this node: a node
        # joining a cluster, or one that learned it was removed.
        self._members: Mapping[str, Member] = self._normalize({m.raft: m for m in members},
                                                              self_addr)
        self._change_index = 0  # leader: log index of its last membership change
        # Pre-vote (Raft thesis 9.6): the term a pending round asks about, who granted it,
        # and whether the last round won (then the next expiry starts a real election).
        self._prevote_term: int | None = None
        self._prevote_grants: set[str] = set()
        self._prevote_won = False
        self.prevotes_started = 0
        self.elections_started = 0  # PySyncObj elections (each after a won pre-vote round)
        peers = [addr for addr in self._members if addr != self_addr]
        self.lease = LeaderLease(profile.lease_duration, peers)
        self.stickiness = Stickiness(profile.min_timeout)
        self.paused = False  # leader: hold new proposals in the queue (leadership transfer)
        self._profile = profile
        self._on_transfer_request = on_transfer_request
        self._is_healthy = is_healthy
        self._last_ping = 0.0
        self._sent_commit = 0
        self.fatal_error: str | None = None
        self.peer_health: dict[str, tuple[bool, int, float]] = {}  # addr -> (ok, applied, when)
        self._prepare_dump = prepare_dump
        self._log_cap: int | None = None  # flow control: see _SyncObj__sendAppendEntries
        self._acks: dict[Any, tuple[int, float]] = {}  # follower -> (last ack, when it moved)
        self._send_unsynced = False  # leader: see _checkCommandsToApply
        # Leader, while draining: answers to forwarded proposals, sent after the batch's fsync.
        self._held_replies: list[tuple[Any, Any]] | None = None
        self._compaction: _Compaction | None = None
        self.compactions_total = 0
        self._trimmed_at = 0  # journal bytes compacted away at the last malloc_trim
        kwargs = {"transportClass": transport_class} if transport_class is not None else {}
        super().__init__(self_addr, peers, conf, consumers=consumers, **kwargs)
        # Bounded, and drained by the leader only while its uncommitted tail has room.
        # Waiting state-machine proposals leave it grouped into one entry (grouping.py).
        self.grouper = Grouper(encode_call) if encode_call is not None else None
        self._SyncObj__commandsQueue = ProposalQueue(self.limits.max_uncommitted_entries,
                                                     self.grouper)
        if journal is not None:
            self._install_durable_storage(journal)

    # -- accessors to PySyncObj's private state ---------------------------------------------
    @property
    def role(self) -> str:
        """'leader', 'follower' or 'candidate' as Raft sees it (not lease-checked)."""
        return ROLE_NAMES[self._SyncObj__raftState]

    def last_log_index(self) -> int:
        """Index of the last entry in this node's log."""
        return self._SyncObj__raftLog[-1][1]

    def match_index(self) -> dict[str, int]:
        """Leader only: highest index known replicated on each peer."""
        return {n.id: i for n, i in dict(self._SyncObj__raftMatchIndex).items()}

    def last_contact(self) -> dict[str, float]:
        """Leader only: monotonic time of each peer's last response."""
        return {n.id: t for n, t in dict(self._SyncObj__lastResponseTime).items()}

    def connected_peers(self) -> set[str]:
        """Addresses of peers with an open connection."""
        return {n.id for n in set(self._SyncObj__connectedNodes)}

    def _peer_id(self, node: Any) -> str:
        """Member id of a PySyncObj peer node (its address if it is not a member)."""
        member = self._members.get(node.id)
        return member.id if member is not None else node.id

    def leader_address(self) -> str | None:
        """Address of the last known leader."""
        leader = self._getLeader()
        return None if leader is None else leader.id

    def caught_up_in_term(self) -> bool:
        """Leader: its term's no-op and everything committed are applied (lease reads are safe)."""
        noop = self._SyncObj__noopIDx
        return noop is not None and self.raftLastApplied == self.raftCommitIndex >= noop

    def log_length(self) -> int:
        """Entries currently held in the journal (shrinks at compaction)."""
        return len(self._SyncObj__raftLog)

    def send(self, peer: str | None, message: dict[str, Any]) -> None:
        """Send a hastate control message to the peer at ``peer``, or to all when None.

        Tick thread only.
        """
        for node in self.otherNodes:
            if peer is None or node.id == peer:
                self._SyncObj__transport.send(node, message)

    # -- adaptive batching ------------------------------------------------------------------
    def _checkCommandsToApply(self) -> None:
        """Drain the proposal queue, then send at once: one append_entries carries the batch.

        Defect 10: PySyncObj batches by waiting for the next ``appendEntriesPeriod`` (~100 ms
        per write); sending right after draining keeps an idle pipeline fast and a busy one
        batched.
        """
        traces = self.traces
        traces.refresh()
        leading = self._SyncObj__raftState == _RAFT_STATE.LEADER
        if self.paused and leading:
            return
        before = self.last_log_index()
        queue = self._SyncObj__commandsQueue
        if leading:  # back-pressure: append no more than the uncommitted tail has room for
            entries, nbytes = self.uncommitted()
            queue.drain_budget(self.limits.max_uncommitted_entries - entries,
                               self.limits.max_uncommitted_bytes - nbytes)
        else:
            queue.drain_budget(None)
        if leading:
            self._held_replies = []
        try:
            super()._checkCommandsToApply()
            if leading:
                self._replicate_drained(before, queue.drained_bytes, queue.drained_sizes,
                                        queue.drained_grouped)
        finally:
            replies, self._held_replies = self._held_replies, None
        # Forwarded proposals learn their entry's position only now, after the one fsync of
        # the batch (PySyncObj answers each as it appends; with the journal's send-after-sync
        # rule that was one fsync per forwarded command). The answer acknowledges nothing:
        # the follower still waits until that entry commits (durable on a majority).
        for node, message in replies or ():
            self._SyncObj__transport.send(node, message)

    def _replicate_drained(self, before: int, nbytes: int, sizes: list[int],
                           grouped: int = 0) -> None:
        """Leader: send the entries appended after ``before``, then make them durable.

        ``grouped``: commands appended beyond one per entry (batch members), so the
        uncommitted bound keeps counting commands.
        """
        if self.last_log_index() == before:
            return
        traces = self.traces
        self._tail.add(self.last_log_index(), nbytes, grouped)
        if len(sizes) != self.last_log_index() - before:  # a refused membership change
            sizes = [len(e[0]) for e in self._SyncObj__getEntries(before + 1)]
        self._sizes.add(before + 1, sizes)
        if traces.active:
            traces.on_appended(self._SyncObj__getEntries(before + 1))
        # Defect 4, with Raft thesis 10.2.1: the leader sends first and makes its own copy
        # durable while the followers write theirs (one fsync for the whole drained
        # batch). It still counts itself toward commit only once durable: commit is
        # computed on this thread, in a later tick, after the fsync below has returned.
        self._send_unsynced = True
        try:
            self._SyncObj__sendAppendEntries()
        finally:
            self._send_unsynced = False
        if traces.active:
            traces.on_sent()
        self.flush_journal()

    def _applyCommand(self, command: bytes, callback: Any,  # noqa: N802 (PySyncObj's name)
                      commandType: int | None = None) -> None:  # noqa: N803
        """Queue a proposal; a leader notes when traced ones arrive (their queue wait)."""
        if self.traces.active and self._SyncObj__raftState == _RAFT_STATE.LEADER:
            self.traces.on_enqueue(command if commandType is None
                                   else bytes((commandType,)) + command)
        super()._applyCommand(command, callback, commandType)

    def propose(self, raw: bytes, callback: Callback) -> None:
        """Any thread: queue an encoded state-machine command, which may share its log entry
        with the proposals waiting next to it; ``callback(result, error)`` gets its own
        result. A full queue answers ``QUEUE_FULL`` at once, on the caller's thread."""
        if self.grouper is None:
            raise HAStateError("this SyncObj was built without encode_call; propose through "
                               "the replicated method instead")
        try:
            self._SyncObj__commandsQueue.put_nowait(Proposal(raw, callback))
        except queue_mod.Full:
            callback(None, FAIL_REASON.QUEUE_FULL)

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        """Apply one entry; a traced one is timed (its apply span)."""
        traces = self.traces
        if not traces.pending:
            return SyncObj._SyncObj__doApplyCommand(self, command)
        index = self._SyncObj__raftLastApplied + 1
        started = now_ns()
        try:
            return SyncObj._SyncObj__doApplyCommand(self, command)
        finally:
            traces.on_apply(index, command, started, now_ns())

    def _SyncObj__applyLogEntries(self) -> bool:
        """Apply committed entries; tell followers about a new commit index without waiting.

        Defect 10: PySyncObj tells them at its next ``appendEntriesPeriod``.
        """
        if self.traces.pending and self._SyncObj__raftState == _RAFT_STATE.LEADER:
            self.traces.on_commit(self._SyncObj__raftCommitIndex, self._SyncObj__raftMatchIndex)
        need_send = SyncObj._SyncObj__applyLogEntries(self)
        if self._SyncObj__raftState == _RAFT_STATE.LEADER and \
                self._SyncObj__raftCommitIndex != self._sent_commit:
            need_send = True
        return need_send

    def _SyncObj__sendAppendEntries(self) -> None:
        """Send each follower at most ``limits.max_inflight_entries`` (and ``_bytes``) past
        its last ack.

        PySyncObj sends everything from ``nextIndex`` on: under saturation a follower's
        backlog (and the leader's send buffer) grows without bound, lease pings queue behind
        it and the leader loses its lease while Raft still calls it leader. Here PySyncObj's
        sender runs once per follower with the log's end capped at that follower's window.
        """
        self._sent_commit = self._SyncObj__raftCommitIndex
        connected = self._SyncObj__connectedNodes
        match = self._SyncObj__raftMatchIndex
        first = self._SyncObj__raftLog[0][1]
        everyone = set(connected)
        try:
            for node in everyone:
                acked = match.get(node, 0)
                # No cap before a term's first ack (match 0) or while a dump is being sent
                # (nextIndex at or below the log's start): those must not stall.
                next_index = self._SyncObj__raftNextIndex.get(node, 0)
                if self._is_seed_entry(next_index):
                    # A restore's stand-in no-ops are not the commands they replace: a
                    # follower that needs them gets the dump (PySyncObj sends the dump to a
                    # follower whose nextIndex is at or below the log's start).
                    next_index = self._SyncObj__raftNextIndex[node] = first
                cap = rules.send_window(acked, next_index, first,
                                        self.limits.max_inflight_entries)
                self._log_cap = self._sizes.cap(acked, cap, self.limits.max_inflight_bytes) \
                    if cap is not None else None
                if self._log_cap is not None and next_index > self._log_cap:
                    if not self._window_lost(node, acked):
                        continue  # window full: wait for acks (lease pings reset its timer)
                    # No ack for a whole election timeout: the window's entries were lost
                    # (a dropped connection); send again from the last ack.
                    self._SyncObj__raftNextIndex[node] = acked + 1
                connected.intersection_update({node})
                SyncObj._SyncObj__sendAppendEntries(self)
                connected.update(everyone)
        finally:
            self._log_cap = None
            connected.update(everyone)

    def _window_lost(self, node: Any, acked: int) -> bool:
        """Leader: whether ``node``'s full window went unacknowledged for ``max_timeout``."""
        now = time.monotonic()
        last, since = self._acks.get(node, (-1, now))
        if acked != last:
            self._acks[node] = (acked, now)
            return False
        if now - since < self._profile.max_timeout:
            return False
        self._acks[node] = (acked, now)   # one resend per timeout
        return True

    def uncommitted(self) -> tuple[int, int]:
        """Leader: (commands, bytes) appended but not committed (any thread).

        Commands, not entries: an entry grouping several proposals counts each of them.
        """
        commit = self._SyncObj__raftCommitIndex
        extra, nbytes = self._tail.after(commit)
        return self.last_log_index() - commit + extra, nbytes

    def leader_commit_index(self) -> int:
        """The commit index the leader last told this node (its own on the leader; 0 before
        this node heard from any leader)."""
        return self._SyncObj__leaderCommitIndex or 0

    def queued(self) -> int:
        """Proposals waiting in the command queue (any thread)."""
        return len(self._SyncObj__commandsQueue)

    def _SyncObj__getCurrentLogIndex(self) -> int:
        last = self._SyncObj__raftLog[-1][1]
        return last if self._log_cap is None else min(last, self._log_cap)

    # -- leadership -------------------------------------------------------------------------
    def _SyncObj__onBecomeLeader(self) -> None:
        SyncObj._SyncObj__onBecomeLeader(self)
        self.flush_journal()  # defect 4: the term's no-op is durable before it can commit
        self.lease.start(self._SyncObj__raftCurrentTerm)
        self._tail.reset()
        self._sizes.reset()
        self.paused = False
        self._last_ping = 0.0
        self._change_index = 0

    def _SyncObj__setState(self, new_state: int) -> None:
        if new_state != _RAFT_STATE.LEADER:
            self.lease.end()
            self.paused = False
        if new_state != _RAFT_STATE.FOLLOWER:  # the election the pre-vote allowed started
            self._prevote_won = False
            self._prevote_term = None
        if new_state == _RAFT_STATE.CANDIDATE:  # PySyncObj sets it only to start an election
            self.elections_started += 1
        SyncObj._SyncObj__setState(self, new_state)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        term = self._SyncObj__raftCurrentTerm
        if kind == PING:
            # Defect 5 (no lease): a follower confirms the leader's lease ping and treats it
            # as a heartbeat, so its own election timer cannot fire inside the lease.
            if message["term"] == term and node == self._getLeader():
                self.stickiness.heard_from_leader()
                self._SyncObj__raftElectionDeadline = time.monotonic() + \
                    self._SyncObj__generateRaftTimeout()
                self._SyncObj__transport.send(node, {"type": PONG, "term": term,
                                                     "sent": message["sent"]})
            return
        if kind == PONG:
            if self._SyncObj__raftState == _RAFT_STATE.LEADER:
                self.lease.on_ack(node.id, message["term"], message["sent"])
                if message["term"] == term and node in self._SyncObj__lastResponseTime:
                    # A follower busy with a batch still answers pings: the leader's
                    # step-down timer (leaderFallbackTimeout) must not depend on data.
                    self._SyncObj__lastResponseTime[node] = time.monotonic()
            return
        if kind == TRANSFER:
            if message["term"] == term and node == self._getLeader():
                self.stickiness.allow_transfer(term, message["target"])
            return
        if kind == HEALTH:
            self.peer_health[node.id] = (bool(message["healthy"]), int(message["applied"]),
                                         time.monotonic())
            return
        if kind == TRANSFER_REQUEST:
            if self._on_transfer_request is not None:
                self._on_transfer_request(message["target"])
            return
        if kind == PREVOTE:  # defect 13: answer a pre-vote round without changing any state
            self._SyncObj__transport.send(node, {"type": PREVOTE_REPLY, "term": message["term"],
                                                 "granted": self._grants_prevote(node, message)})
            return
        if kind == PREVOTE_REPLY:
            if message["granted"] and message["term"] == self._prevote_term:
                self._prevote_grants.add(node.id)
                self._check_prevote()
            return
        if kind == "next_node_idx" and self._SyncObj__raftState == _RAFT_STATE.LEADER and \
                not message["success"] and message["reset"]:
            # Defect 11: a failure hint may only move nextIndex back (rules.clamp_next_index);
            # PySyncObj applies each hint as is, so a rejoining old leader never catches up.
            current = self._SyncObj__raftNextIndex.get(node)
            clamped = rules.clamp_next_index(message["next_node_idx"], current)
            if clamped != message["next_node_idx"]:
                message = {**message, "next_node_idx": clamped}
        if kind == "request_vote" and self._SyncObj__raftState != _RAFT_STATE.LEADER and \
                not self.stickiness.may_vote(message["term"], node.id):
            # Defect 5 (no stickiness): ignore a vote request, without adopting its term,
            # while a live leader was heard from within the minimum election timeout.
            return
        if kind == "append_entries" and "prevLogIdx" in message and \
                "transmission" not in message and message["term"] >= term:
            self._append_entries(node, message)
            return
        if kind == "timeout_now" and not self._is_healthy():  # health-driven failover
            logger.warning("refusing leadership transfer: this node fails its health check")
            return
        leader_commit = None
        if kind == "append_entries" and message["term"] >= term and \
                message.get("commit_index", 0) > self._SyncObj__raftCommitIndex:
            # Defect 14: PySyncObj raises a follower's commit index to min(the leader's, its
            # own last index) on every append_entries it handles, dump chunks included,
            # before this log was matched against the leader's: a deposed leader then
            # applies, and acknowledges, its own uncommitted tail. The messages that reach
            # PySyncObj here (dump chunks, large entries) leave the commit index alone;
            # loading a dump sets it, the next regular append_entries advances it.
            leader_commit = message["commit_index"]
            message = {**message, "commit_index": self._SyncObj__raftCommitIndex}
        sent_next = self._SyncObj__raftNextIndex.get(node) \
            if kind == "next_node_idx" and message["success"] else None
        SyncObj._SyncObj__onMessageReceived(self, node, message)
        if sent_next is not None and self._SyncObj__raftState == _RAFT_STATE.LEADER:
            # Defect 2: PySyncObj moves nextIndex back to the ack, resending what is in flight.
            self._SyncObj__raftNextIndex[node] = rules.next_index_after_ack(
                self._SyncObj__raftNextIndex.get(node, sent_next), sent_next)
        if leader_commit is not None:
            self._SyncObj__leaderCommitIndex = leader_commit
        if kind == "append_entries" and message["term"] >= term and node == self._getLeader():
            self.stickiness.heard_from_leader()

    # -- membership (one server at a time; see consensus/membership.py) --------------------
    @property
    def members(self) -> Mapping[str, Member]:
        """The configuration in this node's log: Raft address -> member (any thread)."""
        return self._members

    @property
    def is_member(self) -> bool:
        """Whether this node is a voter in its own latest configuration."""
        return self.selfNode.id in self._members

    def pending_change(self) -> int | None:
        """Leader: index of its membership change not yet committed, or None."""
        idx = self._change_index
        return idx if idx > self._SyncObj__raftCommitIndex else None

    def propose_change(self, change: Change, callback: Callable[[Any, int], None]) -> None:
        """Leader, tick thread: queue a membership change (checked again when appended)."""
        self._applyCommand(change.encode(), callback)

    def _SyncObj__parseChangeClusterRequest(self, command: bytes) -> Change | None:
        """Our msgpack membership commands (defect 12: PySyncObj unpickles its own)."""
        return decode_change(command)

    def _SyncObj__changeCluster(self, request: Change) -> bool:
        """Leader, at append: allow a change only after this term's no-op and the previous
        change committed (defect 12: PySyncObj declares that check but never records the
        index)."""
        noop = self._SyncObj__noopIDx
        if noop is None or self.raftLastApplied < noop or self.pending_change() is not None:
            return False
        if not self._SyncObj__doChangeCluster(request):
            return False
        self._change_index = self.last_log_index() + 1  # the index the entry is appended at
        return True

    def _SyncObj__doChangeCluster(self, request: Change, reverse: bool = False) -> bool:
        """Apply (or undo) one change to the configuration, PySyncObj's peer set and the lease.

        Called when the entry enters the log (leader: at append; follower: when received),
        again when it is applied (a no-op then) and, with ``reverse``, when it is truncated.
        Defect 12: PySyncObj tells nothing above Raft (transport ids, lease voters).
        """
        before = self._members
        after = request.apply(before, reverse)
        if after == before:
            return False
        self._set_configuration(after)
        logger.info("membership %s%s %s (%s): members now %s", "undo " if reverse else "",
                    request.op, request.member.id, request.member.raft,
                    sorted(m.id for m in after.values()))
        return True

    def _normalize(self, members: Mapping[str, Member], self_addr: str) -> dict[str, Member]:
        """This node's record under its current address (its address in the file changed)."""
        mine = [a for a, m in members.items() if m.id == self._self_id and a != self_addr]
        if not mine:
            return dict(members)
        result = {a: m for a, m in members.items() if a not in mine}
        old = members[mine[0]]
        result[self_addr] = Member(old.id, self_addr, old.http, old.region)
        logger.warning("this node's Raft address changed from %s to %s; the other members "
                       "still use the old one (change a member's address by removing and "
                       "re-adding it)", old.raft, self_addr)
        return result

    def _set_configuration(self, members: Mapping[str, Member]) -> None:
        """Make ``members`` the configuration: peers, transport ids, lease voters."""
        members = self._normalize(members, self.selfNode.id)
        transport = self._SyncObj__transport
        register = getattr(transport, "register_member", None)
        if register is not None:
            for member in members.values():
                register(member.raft, member.id)
        self_addr = self.selfNode.id
        peers = [addr for addr in members if addr != self_addr]
        self._SyncObj__updateClusterConfiguration(peers)
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            now = time.monotonic()
            last_response = self._SyncObj__lastResponseTime
            for node in self._SyncObj__otherNodes:
                last_response.setdefault(node, now)
        self._members = dict(members)
        self.lease.set_peers(peers)

    def _changes_after(self, index: int) -> list[Change]:
        """The membership changes in this node's log after ``index``, oldest first."""
        changes = (decode_change(entry[0]) for entry in self._SyncObj__getEntries(index + 1))
        return [change for change in changes if change is not None]

    def _configuration_from(self, base: Mapping[str, Member], after_index: int) -> None:
        """Adopt ``base`` plus every membership change in the log after ``after_index``."""
        members = dict(base)
        for change in self._changes_after(after_index):
            members = change.apply(members)
        self._set_configuration(members)

    def _configuration_at(self, index: int) -> dict[str, Member]:
        """The configuration as of log ``index``: undo the changes in the log after it."""
        members = dict(self._members)
        for change in reversed(self._changes_after(index)):
            members = change.apply(members, reverse=True)
        return members

    def _members_from_dump(self, cluster: list[Any]) -> dict[str, Member]:
        """A dump's configuration; dumps before membership changes hold bare addresses."""
        known = self._members
        members = {}
        for item in cluster:
            if isinstance(item, str):
                members[item] = known.get(item) or Member(item.replace(":", "-"), item)
            else:
                member = Member.from_dict(item)
                members[member.raft] = member
        return members

    def _append_entries(self, node: Any, message: dict[str, Any]) -> None:
        """Follower side of append_entries, truncating only at a real conflict.

        Defects 2 and 3: PySyncObj deletes every entry after ``prevLogIdx`` even when nothing
        conflicts, so a duplicate or reordered batch rolls back acknowledged (even committed)
        entries, and can leave an empty log that raises IndexError on every tick. Raft says:
        keep matching entries, delete only from the first index whose term differs.
        """
        # Leader bookkeeping (term, leader, election timer) without touching the log.
        SyncObj._SyncObj__onMessageReceived(self, node, {
            "type": "append_entries", "term": message["term"],
            "commit_index": self._SyncObj__raftCommitIndex})
        self.stickiness.heard_from_leader()
        prev_idx, prev_term = message["prevLogIdx"], message["prevLogTerm"]
        if prev_idx < self._SyncObj__raftLog[0][1]:
            # The leader is behind our compacted log start (e.g. it sent a dump we were
            # already past). Everything up to our commit index is committed, so identical on
            # every node: acknowledge it, and the leader resumes right after it. (A plain
            # "not found" would ask for a higher nextIndex, which a leader must not take
            # from a failure reply: see the next_node_idx rule above.)
            self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=self._SyncObj__raftCommitIndex + 1,
                                           success=True)
            return
        prev = self._SyncObj__getEntries(prev_idx, 1)
        if not prev:
            self._SyncObj__sendNextNodeIdx(node, success=False, reset=True)
            return
        if prev[0][2] != prev_term and not self._is_seed_entry(prev_idx):
            self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=self._conflict_hint(prev_idx),
                                           success=False, reset=True)
            return
        verified = prev_idx
        entries = message.get("entries", [])
        for pos, (command, idx, entry_term) in enumerate(entries):
            have = self._SyncObj__getEntries(idx, 1)
            if have and (have[0][2] == entry_term or self._is_seed_entry(idx)):
                verified = idx
                continue
            if have:
                if idx <= self._SyncObj__raftCommitIndex:
                    self.fatal_error = (f"leader {node.id} conflicts with committed entry {idx}; "
                                        "refusing to truncate committed log")
                    logger.critical(self.fatal_error)
                    return
                for change in reversed(self._changes_after(idx - 1)):
                    self._SyncObj__doChangeCluster(change, reverse=True)
                self._SyncObj__deleteEntriesFrom(idx)
            for entry in entries[pos:]:
                self._SyncObj__raftLog.add(*entry)
                change = decode_change(entry[0])
                if change is not None:
                    self._SyncObj__doChangeCluster(change)
            if self.traces.active:
                self.traces.on_received(entries[pos:])
            verified = entries[-1][1]
            break
        self.before_ack()
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=verified + 1, success=True)
        leader_commit = message["commit_index"]
        self._SyncObj__leaderCommitIndex = leader_commit
        commit = rules.follower_commit(self._SyncObj__raftCommitIndex, leader_commit, verified)
        if commit != self._SyncObj__raftCommitIndex:
            self._SyncObj__raftCommitIndex = commit
            self._SyncObj__raftLog.setRaftCommitIndex(commit)

    def _is_seed_entry(self, index: int) -> bool:
        """Whether the entry at ``index`` is one of a restore's two stand-in no-ops.

        They stand for the state committed at the seed's index (the restore replays
        committed commands only): as a follower they match the leader's entries there
        whatever their term says; as a leader this node sends its dump instead of them.
        Without this, a node seeded from a snapshot taken after a leader change never
        catches up: every append at the seed's index is a term mismatch at a committed
        index, and the leader may not move below it.
        """
        return index <= self._seeded_at and index <= self._SyncObj__raftCommitIndex and \
            bool(self._SyncObj__getEntries(index, 1))

    def _conflict_hint(self, index: int) -> int:
        """Where the leader should retry after a term mismatch at ``index`` (defect 11)."""
        return rules.conflict_hint(index, self._SyncObj__raftCommitIndex, self._term_at)

    def _term_at(self, index: int) -> int | None:
        """Term of this node's entry at ``index``, or None when the log does not hold it."""
        entry = self._SyncObj__getEntries(index, 1)
        return entry[0][2] if entry else None

    def before_ack(self) -> None:
        """Make appended entries durable before they are acknowledged (one fsync per batch)."""
        self.flush_journal()

    # -- durable storage (defects 1, 4 and 9; see consensus/journal.py) ------------------------
    # PySyncObj builds its journal inside SyncObj.__init__ from conf.journalFile, with no hook.
    # RaftNode therefore passes journalFile=None (PySyncObj makes a throwaway MemoryJournal)
    # and hands us a DurableJournal, which replaces it right after SyncObj.__init__, before
    # the first tick: no message has been read and nothing applied yet. Term, vote and commit
    # index are then re-read from it exactly as SyncObj.__init__ reads them, the dump writer
    # is replaced by one that syncs its renames, and the dump is loaded at once (so a journal
    # that does not fit the dump stops start() instead of the first tick).
    def _SyncObj__tryLogCompaction(self) -> None:
        """Compact the log without stalling the Raft thread.

        With a custom serializer PySyncObj encodes and writes the whole state on the tick
        thread (it disables fork), so a large state stalls heartbeats and triggers
        elections. Here the tick thread only takes a shallow copy; a thread writes the dump
        durably, and only then, back on the tick thread, is the journal truncated (so a
        crash at any point leaves a dump plus every entry after it: defect 1). Defect 9.
        """
        now = time.monotonic()
        job = self._compaction
        if job is not None:
            if job.is_alive():
                return
            self._compaction = None
            self._SyncObj__lastSerializedTime = now
            if job.error is not None:
                logger.error("log compaction failed; keeping the journal: %r", job.error)
                return
            self._SyncObj__deleteEntriesTo(job.upto)
            self._SyncObj__lastSerializedEntry = job.upto
            self.compactions_total += 1
            self._release_compacted_memory()
            return
        conf = self.conf
        if not rules.compaction_due(
                applied=self.raftLastApplied, last_dumped=self._SyncObj__lastSerializedEntry or 0,
                now=now, last_dump_time=self._SyncObj__lastSerializedTime,
                min_entries=conf.logCompactionMinEntries, min_seconds=conf.logCompactionMinTime,
                forced=self._SyncObj__forceLogCompaction):
            return
        self._SyncObj__forceLogCompaction = False
        entries = self._SyncObj__getEntries(self.raftLastApplied - 1, 2)
        if len(entries) < 2 or entries[0][1] == self._SyncObj__lastSerializedEntry:
            self._SyncObj__lastSerializedTime = now
            return
        prev, last = entries
        at_dump = self._configuration_at(last[1])
        members = [m.to_dict() for m in sorted(at_dump.values(), key=lambda m: m.id)]
        self._compaction = _Compaction(self._prepare_dump(last, prev, members), upto=prev[1])
        self._compaction.start()

    def _release_compacted_memory(self) -> None:
        """Hand the pages of dropped entries back to the OS once there are many of them.

        Only after large drops (a bulk load's entries): a trim on every compaction of small
        entries made the allocator fault the same pages back in under load.
        """
        log = self._SyncObj__raftLog
        if not isinstance(log, DurableJournal):
            return
        dropped = log.stats["compacted_bytes"]
        if dropped - self._trimmed_at >= _malloc.WORTH_TRIMMING:
            self._trimmed_at = dropped
            _malloc.trim_in_background()

    def _install_durable_storage(self, journal: DurableJournal) -> None:
        self._SyncObj__raftLog._destroy()
        self._SyncObj__raftLog = journal
        journal.flush_observer = self.traces.on_flush
        if len(journal) == 0:
            journal.add(b"\x01", 1, 0)  # PySyncObj's first entry: a no-op at index 1, term 0
        self._SyncObj__raftCurrentTerm = max(journal.getCurrentTerm(), journal[-1][2])
        self._SyncObj__votedForNodeId = journal.getVotedForNodeId()
        self._SyncObj__raftCommitIndex = journal.getRaftCommitIndex()
        conf = self.conf
        self._SyncObj__serializer = DurableSerializer(
            conf.fullDumpFile, conf.logCompactionBatchSize, conf.useFork, conf.serializer,
            conf.deserializer, conf.serializeChecker, is_stale=self._dump_is_stale)
        # Safety net for paths that append and reply inside PySyncObj (e.g. an entry larger
        # than appendEntriesBatchSizeBytes arrives as a 'transmission'): no message leaves
        # this node while it has unsynced entries. A no-op when nothing is pending.
        transport = self._SyncObj__transport
        raw_send = transport.send

        def send_after_sync(node: Any, message: Any) -> Any:
            held = self._held_replies
            if held is not None and message.get("type") == "apply_command_response":
                held.append((node, message))  # sent once the drained batch is durable
                return True
            if not self._send_unsynced:  # only the leader's fresh batch may go unsynced
                journal.flush()
            return raw_send(node, message)

        transport.send = send_after_sync
        if conf.fullDumpFile is not None and os.path.isfile(conf.fullDumpFile):
            self._SyncObj__loadDumpFile(False)  # the dump's configuration + the log's changes
        else:
            self._configuration_from(self._members, 0)  # bootstrap + the log's changes
        self._SyncObj__needLoadDumpFile = False

    def _dump_is_stale(self, path: str) -> bool:
        """A dump sent by the leader ends at an entry this node has committed or holds.

        Defect 2 (2b): such a snapshot is ignored and the log after it kept; PySyncObj resets
        the log to it, moving a caught-up follower backwards (below its commit index).
        """
        try:
            header, _ = read_header(Path(path).read_bytes(), source=path)
        except CorruptDataError:
            return False  # not ours to judge: loading it reports the corruption
        return rules.dump_is_stale(header.index, header.term, self._SyncObj__raftCommitIndex,
                                   self._term_at(header.index))

    def flush_journal(self) -> int:
        """Group commit: make every appended entry durable; returns how many were synced."""
        log = self._SyncObj__raftLog
        return log.flush() if isinstance(log, DurableJournal) else 0

    def _SyncObj__loadDumpFile(self, clearJournal: bool) -> None:  # noqa: N803
        """Load the full dump, keeping the journal entries after it (defect 1).

        PySyncObj clears the whole journal unless its first two entries equal the dump's
        last two, so a crash between the dump's rename and the journal's compaction lost
        every entry after the dump, acknowledged ones included. Errors stop the node
        (PySyncObj logs them and runs on with an empty state).
        """
        log = self._SyncObj__raftLog
        if not isinstance(log, DurableJournal) or self.conf.serializer is None:
            SyncObj._SyncObj__loadDumpFile(self, clearJournal)
            return
        try:
            _, last, prev, cluster = self._SyncObj__serializer.deserialize()
            if clearJournal:  # a dump installed from the leader replaces this log
                log.reset([prev, last])
                kept = 0
            else:
                kept = log.adopt_dump(last, prev)
            self._configuration_from(self._members_from_dump(cluster), last[1])
        except Exception as exc:
            self.fatal_error = f"cannot load the full dump with the journal: {exc}"
            logger.critical(self.fatal_error)
            if isinstance(exc, CorruptDataError):
                raise
            raise CorruptDataError(self.fatal_error) from exc
        self._SyncObj__raftLastApplied = last[1]
        commit = rules.commit_after_dump(self._SyncObj__raftCommitIndex, last[1],
                                         self.last_log_index())
        self._SyncObj__raftCommitIndex = commit
        log.setRaftCommitIndex(commit)
        self._SyncObj__onSetCodeVersion(0)
        if kept:
            logger.info("kept %d journal entries after the dump at index %d", kept, last[1])

    # -- per-tick duties (called by the node's tick loop) ---------------------------------------
    def before_tick(self) -> None:
        """Read waiting messages, then hold a pre-vote before PySyncObj may stand for election.

        Defect 13 (no pre-vote).
        ``_onTick`` checks the election timer *before* it polls the sockets: a follower whose
        previous tick ran long (a big batch to apply, a dump to install) would start an
        election while the leader's heartbeats sit unread in its socket. And PySyncObj has no
        pre-vote: a node that was cut off, or stalled past its timeout, raises its term and,
        once back, the higher term deposes a healthy leader. Here an expired timer first
        starts a pre-vote round (no term change); only a majority of grants lets the next
        expiry run PySyncObj's election. A transfer's timeout-now skips the round.
        """
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            return
        now = time.monotonic()
        if self._SyncObj__raftElectionDeadline < now:
            self._poller.poll(0)  # heartbeats waiting in the socket may reset the timer
        if self._SyncObj__raftElectionDeadline >= now:
            self._prevote_won = False  # a leader was heard from: a new round next time
            return
        if self._prevote_won or self._SyncObj__transferInProgress:
            self._prevote_won = False
            return  # PySyncObj starts the election in this tick
        self._start_prevote(now)

    def _start_prevote(self, now: float) -> None:
        """Ask the members whether they would vote for this node in the next term."""
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        self._prevote_term = self._SyncObj__raftCurrentTerm + 1
        self._prevote_grants = {self.selfNode.id}
        self.prevotes_started += 1
        last = self._SyncObj__raftLog[-1]
        self.send(None, {"type": PREVOTE, "term": self._prevote_term,
                         "last_log_index": last[1], "last_log_term": last[2]})
        self._check_prevote()  # a one-member cluster needs no one else

    def _check_prevote(self) -> None:
        """With a majority of the members' grants, stand for election at once."""
        voters = set(self._members) | {self.selfNode.id}
        if rules.has_majority(self._prevote_grants, voters):
            self._prevote_won = True
            self._prevote_term = None
            self._SyncObj__raftElectionDeadline = 0.0

    def _grants_prevote(self, node: Any, message: dict[str, Any]) -> bool:
        """Whether this node would vote for ``node`` in ``message['term']`` (changes nothing).

        Yes only if that term is newer than ours, no leader was heard from within the
        minimum election timeout (stickiness) and the candidate's log is at least as
        up to date as ours (Raft's voting rule).
        """
        last = self._SyncObj__raftLog[-1]
        return rules.grants_prevote(
            leader=self._SyncObj__raftState == _RAFT_STATE.LEADER, term=message["term"],
            current_term=self._SyncObj__raftCurrentTerm,
            sticky_allows=self.stickiness.may_vote(message["term"], node.id),
            candidate_last=(message["last_log_term"], message["last_log_index"]),
            own_last=(last[2], last[1]))

    def after_tick(self) -> None:
        """Send lease pings as leader; keep unhealthy nodes and non-members from campaigning."""
        now = time.monotonic()
        state = self._SyncObj__raftState
        if state == _RAFT_STATE.LEADER and now - self._last_ping >= \
                self._profile.append_entries_period / 2:
            self._last_ping = now
            self.send(None, {"type": PING, "term": self._SyncObj__raftCurrentTerm, "sent": now})
        elif state != _RAFT_STATE.LEADER and (not self._is_healthy() or not self.is_member):
            # A node outside its own configuration (joining, or removed) never campaigns:
            # it would only disrupt the members with higher terms.
            self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()

    def announce_transfer(self, target: str) -> bool:
        """Leader: if ``target`` has every entry, tell the others and send it timeout-now."""
        if self._SyncObj__raftState != _RAFT_STATE.LEADER:
            return False
        if self.match_index().get(target) != self.last_log_index():
            return False
        self.send(None, {"type": TRANSFER, "term": self._SyncObj__raftCurrentTerm,
                         "target": target})
        result: list[int] = []
        self.transferLeadership(target, callback=lambda _res, err: result.append(err))
        return bool(result) and result[0] == FAIL_REASON.SUCCESS
