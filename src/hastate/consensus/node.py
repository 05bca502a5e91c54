"""One Raft node: builds the corrected SyncObj, owns its tick thread and data directory.

All PySyncObj state is touched on the tick thread only; other threads hand work to it with
:meth:`RaftNode.call_soon` and wake it through a pipe, so a proposal is sent within
microseconds instead of at the next poll timeout.

Length: :class:`RaftNode` is the one object that owns the tick thread, and each public
operation (propose, status, membership change, leadership transfer) is a method that hands
work to that thread; the rules they apply live in raft.py, rules.py and membership.py.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pysyncobj import SyncObjConf

from hastate._fsutil import atomic_write
from hastate.consensus.backpressure import Limits
from hastate.consensus.consumer import MachineConsumer
from hastate.consensus.dumper import DumpWriter
from hastate.consensus.entry_trace import MARKER
from hastate.consensus.journal import DurableJournal
from hastate.consensus.membership import Change, Member, check_change
from hastate.consensus.outcome import Outcome
from hastate.consensus.profiles import TimingProfile
from hastate.consensus.raft import HEALTH, TRANSFER_REQUEST, HastateSyncObj
from hastate.consensus.status import RaftStatus
from hastate.consensus.waker import PollWaker
from hastate.errors import (ConfigError, CorruptDataError, FailoverError, HAStateError,
                            MembershipRefused, NotLeaderError, WriteTimeoutError)
from hastate.state.dump import decode_dump
from hastate.state.machine import ReplicatedState

logger = logging.getLogger(__name__)

JOURNAL = "raft.journal"
DUMP = "state.dump"
IDENTITY = "node.json"


@dataclass(frozen=True)
class NodeSpec:
    """Who this node is and whom it talks to."""

    node_id: str
    address: str                 # this node's raft "host:port"
    peers: dict[str, str]        # other node ids -> raft "host:port"
    cluster: str
    data_dir: Path
    profile: TimingProfile
    log_compaction_entries: int = 5000
    log_compaction_seconds: float = 300.0
    #: The cluster file's members with http and region (default: built from ``peers``).
    members: tuple[Member, ...] = ()
    #: First start only: join a running cluster (stay passive until a leader adds this node)
    #: instead of bootstrapping a new one with ``peers``.
    join: bool = False
    #: Back-pressure bounds (uncommitted entries and bytes, per-follower window).
    limits: Limits = Limits()

    def bootstrap(self) -> list[Member]:
        """The configuration a brand-new data_dir starts from (before any Raft data exists)."""
        members = list(self.members) or [Member(i, a) for i, a in
                                         {self.node_id: self.address, **self.peers}.items()]
        if self.join:
            return [m for m in members if m.id != self.node_id]
        return members


class RaftNode:
    """A running Raft replica of a :class:`ReplicatedState`."""

    def __init__(self, spec: NodeSpec, machine: ReplicatedState, *,
                 transport_class: Any = None, is_healthy: Callable[[], bool] = lambda: True,
                 journal_sync: Callable[[int], None] | None = None) -> None:
        self.spec = spec
        self.machine = machine
        self._transport_class = transport_class
        self._is_healthy = is_healthy
        self._journal_sync = journal_sync  # e.g. fdatasync wrapped to time it (metrics)
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._syncobj: HastateSyncObj | None = None
        self._waker: PollWaker | None = None
        self._fatal: str | None = None
        self.leader_changes = 0
        self._last_leader: str | None = None
        self._transfer: tuple[str, float] | None = None
        self._leaderless_since: float | None = None
        self._journal: DurableJournal | None = None
        self._bootstrap: list[Member] = []
        self._seeded_at = 0
        self._consumer = MachineConsumer(machine)
        self._tick_observers: list[Callable[[float], None]] = []
        self.dumper = DumpWriter(machine, spec.data_dir / DUMP, cluster=spec.cluster,
                                 node_id=spec.node_id)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Check the data directory, bind the raft port and start ticking."""
        self.spec.data_dir.mkdir(parents=True, exist_ok=True)
        self._bootstrap = self._check_identity()
        self._seeded_at = self._check_dump()
        # Defect 4 (nothing fsync'ed): our journal, opened here so a torn, corrupt or foreign
        # journal fails start() with a message naming the file (HastateSyncObj installs it).
        self._journal = DurableJournal(self.spec.data_dir / JOURNAL, cluster=self.spec.cluster,
                                       node_id=self.spec.node_id, sync=self._journal_sync)
        self._thread = threading.Thread(target=self._run, name=f"hastate-raft-{self.spec.node_id}",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise HAStateError(f"node {self.spec.node_id} did not start within {timeout}s")
        if self._start_error is not None:
            raise self._start_error

    def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking, close sockets and flush the journal."""
        self._stopping.set()
        if self._waker is not None:
            self._waker.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def _check_identity(self) -> list[Member]:
        """Refuse a data_dir written by another cluster or another node; return its bootstrap.

        The bootstrap configuration is recorded at first start, so a later edit of the
        cluster file cannot change what the Raft log's membership changes apply to.
        """
        path = self.spec.data_dir / IDENTITY
        mine = {"cluster": self.spec.cluster, "node_id": self.spec.node_id}
        if not path.exists():
            bootstrap = self.spec.bootstrap()
            atomic_write(path, json.dumps({**mine, "bootstrap": [m.to_dict() for m in bootstrap]
                                           }).encode())
            return bootstrap
        try:
            theirs = json.loads(path.read_text())
            recorded = theirs.get("bootstrap")
            bootstrap = [Member.from_dict(m) for m in recorded] if recorded is not None \
                else self.spec.bootstrap()  # recorded before hastate knew membership changes
        except (ValueError, AttributeError) as exc:
            raise CorruptDataError(f"{path}: unreadable node identity ({exc})") from None
        if {k: theirs.get(k) for k in mine} != mine:
            raise ConfigError(
                f"data_dir {self.spec.data_dir} belongs to cluster {theirs.get('cluster')!r} "
                f"node {theirs.get('node_id')!r}, not cluster {self.spec.cluster!r} node "
                f"{self.spec.node_id!r}; point data_dir at this node's own directory",
                field="data_dir", value=str(self.spec.data_dir))
        return bootstrap

    def _check_dump(self) -> int:
        """Verify the full dump before PySyncObj (which swallows load errors) reads it.

        Returns the index of a dump written by a restore (``consensus/seed.py``), else 0.
        """
        path = self.spec.data_dir / DUMP
        if not path.exists():
            return 0
        header, _ = decode_dump(path.read_bytes(), source=str(path), cluster=self.spec.cluster)
        return header.index if header.extra.get("seeded") else 0

    def _conf(self) -> SyncObjConf:
        profile = self.spec.profile
        return SyncObjConf(
            autoTick=False,
            appendEntriesUseBatch=True,
            appendEntriesPeriod=profile.append_entries_period,
            raftMinTimeout=profile.min_timeout,
            raftMaxTimeout=profile.max_timeout,
            connectionTimeout=profile.connection_timeout,
            connectionRetryTime=min(1.0, profile.min_timeout / 2),
            # Defect 5: an isolated leader kept believing it led for 30 s; step down once it
            # has heard from no majority for one minimum election timeout.
            leaderFallbackTimeout=profile.min_timeout,
            bindAddress=self.spec.address,
            maxBindRetries=10,
            bindRetryTime=0.2,
            journalFile=None,  # defect 4: HastateSyncObj installs our DurableJournal instead
            dynamicMembershipChange=True,  # `hastate members add|remove` (membership.py)
            fullDumpFile=str(self.spec.data_dir / DUMP),
            serializer=self._serialize,
            deserializer=self._deserialize,
            logCompactionMinEntries=self.spec.log_compaction_entries,
            logCompactionMinTime=self.spec.log_compaction_seconds,
        )

    def _run(self) -> None:
        try:
            self._syncobj = HastateSyncObj(
                self.spec.address, self.spec.node_id, self._bootstrap, self._conf(),
                [self._consumer],
                self.spec.profile, transport_class=self._transport_class,
                on_transfer_request=self._on_transfer_request, is_healthy=self._is_healthy,
                journal=self._journal, prepare_dump=self._prepare_dump,
                seeded_at=self._seeded_at, cluster=self.spec.cluster,
                limits=self.spec.limits, encode_call=self._consumer.call_bytes)
            # PySyncObj does not wake its poller for a proposal in batch mode.
            self._waker = PollWaker(self._syncobj._poller)
        except HAStateError as exc:  # journal or dump refused; its message says why
            self._journal.close()
            self._start_error = exc
            self._started.set()
            return
        except Exception as exc:  # bind failure and the like: report to start()
            self._journal.close()
            self._start_error = HAStateError(
                f"node {self.spec.node_id} could not start on {self.spec.address}: {exc!r}; "
                "is another process using the port?")
            self._started.set()
            return
        self._started.set()
        logger.info("raft node started", extra={"node": self.spec.node_id,
                                                 "address": self.spec.address})
        syncobj = self._syncobj
        try:
            while not self._stopping.is_set() and self.fatal_error is None:
                tick_start = time.monotonic()
                syncobj.before_tick()
                syncobj.doTick(self.spec.profile.append_entries_period / 2)
                syncobj.after_tick()
                for observer in self._tick_observers:
                    observer(tick_start)
                self._track_leader()
                self._run_tasks()
                self._drive_transfer()
        except Exception:
            logger.exception("raft tick loop failed", extra={"node": self.spec.node_id})
            self._fatal = "raft tick loop crashed; see the log"
        finally:
            syncobj._doDestroy()
            self.dumper.abort()   # a dump child must not outlive its node's sockets
            self._waker.close()

    def _run_tasks(self) -> None:
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                return
            try:
                task()
            except Exception:
                logger.exception("task on raft thread failed", extra={"node": self.spec.node_id})

    def _track_leader(self) -> None:
        leader = self._syncobj.leader_address()
        if leader is None:
            if self._leaderless_since is None:
                self._leaderless_since = time.monotonic()
        else:
            self._leaderless_since = None
        if leader != self._last_leader:
            if leader is not None:
                self.leader_changes += 1
            self._last_leader = leader

    def add_tick_observer(self, observer: Callable[[float], None]) -> None:
        """Call ``observer(tick_start)`` on the tick thread after every tick.

        ``tick_start`` is the tick's ``time.monotonic()`` at its start. Observers read public
        methods only (:meth:`role`, :meth:`term`, :meth:`lease_expiry`...) and must be quick:
        they delay the next tick. Any thread may add one (the list is replaced, not mutated).
        """
        self._tick_observers = [*self._tick_observers, observer]

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the tick thread after the current tick."""
        self._tasks.put(fn)
        if self._waker is not None:
            self._waker.wake()

    @property
    def fatal_error(self) -> str | None:
        """Why this node stopped itself to protect the data, or None."""
        return self._fatal or (self._syncobj.fatal_error if self._syncobj is not None else None)

    @property
    def running(self) -> bool:
        """True while the tick thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- dump (PySyncObj custom serializer; runs on the tick thread) --------------------------
    def _prepare_dump(self, last: tuple, prev: tuple, members: list[str]) -> Callable[[], None]:
        """Raft thread: fix the state at ``last``; return the write for a background thread."""
        return self.dumper.prepare(last, prev, members)

    @staticmethod
    def _serialize(_tmp_file: str, _raft_data: Any) -> None:
        """PySyncObj requires a serializer next to the deserializer; ours never runs."""
        raise AssertionError("log compaction is done by HastateSyncObj._SyncObj__tryLogCompaction")

    def _deserialize(self, file_name: str) -> tuple[Any, Any, Any]:
        try:
            _, body = decode_dump(Path(file_name).read_bytes(), source=file_name,
                                  cluster=self.spec.cluster)
        except CorruptDataError as exc:
            # PySyncObj swallows deserializer errors and carries on with an empty state;
            # stopping the node is the only safe answer.
            self._fatal = str(exc)
            logger.critical("refusing corrupt dump; node stops", extra={"error": str(exc)})
            raise
        self.machine.load_body(body["state"])
        raft = body["raft"]
        return tuple(raft["last"]), tuple(raft["prev"]), list(raft["cluster"])

    # -- proposals and reads ----------------------------------------------------------------
    def propose(self, raw: bytes, callback: Callable[[Any, Outcome], None], *,
                alone: bool = False) -> None:
        """Queue an encoded command; ``callback(result, outcome)`` runs on the tick thread.

        Commands waiting together may share one log entry (``consensus/grouping.py``). One
        that must have an entry of its own (``alone``: its apply depends on the log index,
        as a lease grant's id does) or a traced one (its entry spans stay its own) goes
        through the replicated call directly.
        """
        def done(result: Any, error: int) -> None:
            callback(result, Outcome(error))

        if alone or MARKER in raw:
            self._consumer.apply(raw, callback=done)
        else:
            self.syncobj.propose(raw, done)
        if self._waker is not None:
            self._waker.wake()

    @property
    def syncobj(self) -> HastateSyncObj:
        """The underlying SyncObj, for the consensus package and its tests only.

        Code outside ``consensus/`` reads :meth:`status` and the methods below instead.
        """
        if self._syncobj is None:
            raise HAStateError("node is not started")
        return self._syncobj

    def status(self) -> RaftStatus:
        """A snapshot of this node's Raft state (any thread; HAStateError before start)."""
        so = self.syncobj
        role = so.role
        return RaftStatus(
            node_id=self.spec.node_id, address=self.spec.address, role=role,
            is_leader=self.is_leader(), term=so.raftCurrentTerm, leader_id=self.leader_id(),
            leader_address=so.leader_address(), fencing_token=self.fencing_token(),
            lease_remaining=so.lease.remaining(), commit_index=so.raftCommitIndex,
            applied_index=so.raftLastApplied, last_log_index=so.last_log_index(),
            log_entries=so.log_length(), caught_up_in_term=so.caught_up_in_term(),
            match_index=so.match_index(), last_contact=so.last_contact(),
            connected=frozenset(so.connected_peers()), peer_health=dict(so.peer_health),
            members=tuple(self.members()), is_member=so.is_member,
            leader_changes=self.leader_changes, fatal_error=self.fatal_error,
            compactions=so.compactions_total, prevotes_started=so.prevotes_started,
            elections_started=so.elections_started,
            uncommitted_entries=so.uncommitted()[0] if role == "leader" else 0,
            queued_proposals=so.queued(),
            behind_leader_entries=max(0, so.leader_commit_index() - so.raftLastApplied))

    def role(self) -> str:
        """'leader', 'follower' or 'candidate' as Raft sees it (not lease-checked)."""
        return self.syncobj.role

    def term(self) -> int:
        """This node's current Raft term."""
        return self.syncobj.raftCurrentTerm

    def compactions(self) -> int:
        """Log compactions this node completed since it started."""
        return self.syncobj.compactions_total

    def elections_started(self) -> int:
        """Elections this node started (as candidate) since it started."""
        return self.syncobj.elections_started

    def lease_expiry(self) -> tuple[int | None, float]:
        """(term, monotonic expiry) of this node's leader lease; (None, -inf) when none."""
        lease = self.syncobj.lease
        return lease.term, lease.expires_at()

    def caught_up_in_term(self) -> bool:
        """Leader: its term's no-op and everything committed are applied (lease reads)."""
        return self.syncobj.caught_up_in_term()

    def publish_health(self, healthy: bool, applied: int) -> None:
        """Tell every peer this node's health and applied index (they pick failover targets)."""
        message = {"type": HEALTH, "healthy": healthy, "applied": applied}
        self.call_soon(lambda: self.syncobj.send(None, message))

    def is_leader(self) -> bool:
        """True only while this node is Raft leader *and* holds a majority-acknowledged lease."""
        so = self._syncobj
        return so is not None and self.running and so.role == "leader" and so.lease.holds()

    def fencing_token(self) -> int | None:
        """The term this node leads in, while it holds the lease; strictly increasing."""
        so = self._syncobj
        term = so.lease.term if so is not None else None
        return term if self.is_leader() else None

    def leaderless_for(self) -> float:
        """Seconds since this node last knew a leader (0 while it knows one)."""
        since = self._leaderless_since
        return 0.0 if since is None else time.monotonic() - since

    def leading_epoch(self) -> int | None:
        """While this node is Raft leader, a number that changes whenever it was not."""
        so = self._syncobj
        return self.leader_changes if so is not None and so.role == "leader" else None

    def leader_id(self) -> str | None:
        """Node id of the last known Raft leader."""
        return None if self._syncobj is None else self.id_of(self._syncobj.leader_address())

    # -- membership ---------------------------------------------------------------------------
    def members(self) -> list[Member]:
        """The configuration in this node's log, sorted by id (the file's before start)."""
        current = self._syncobj.members.values() if self._syncobj is not None \
            else self.spec.bootstrap()
        return sorted(current, key=lambda m: m.id)

    def id_of(self, address: str | None) -> str | None:
        """Node id for a Raft address (None stays None; unknown addresses are returned as is)."""
        if address is None:
            return None
        if address == self.spec.address:
            return self.spec.node_id
        for member in [*self.members(), *self.spec.bootstrap()]:  # then removed members
            if member.raft == address:
                return member.id
        return address

    def address_of(self, node_id: str) -> str:
        """Raft address of member ``node_id``; FailoverError naming the members otherwise."""
        if node_id == self.spec.node_id:
            return self.spec.address
        for member in self.members():
            if member.id == node_id:
                return member.raft
        raise FailoverError(f"unknown instance {node_id!r}; members: "
                            f"{[m.id for m in self.members()]}")

    def change_membership(self, op: str, member: Member | str, timeout: float) -> int:
        """Leader: add ``member`` or remove the member with that id; wait until committed.

        Returns the commit index once the change is committed. Raises NotLeaderError off
        the leader, MembershipRefused (with the reason) when the change would lose quorum,
        conflicts with the configuration or another change is still in flight, and
        WriteTimeoutError when it does not commit within ``timeout``.

        "Reachable" is probed, not remembered: only members that acknowledge a lease ping
        sent after this call began count (waiting up to the minimum election timeout for
        them). A connection to a node killed a moment ago can look fine for that long, and a
        change that cannot commit still takes effect on the leader (Raft applies a
        configuration when it is appended), leaving the cluster unable to commit anything.
        """
        since = time.monotonic()
        probe_end = since + self.spec.profile.min_timeout
        so = self._syncobj
        while self.is_leader() and time.monotonic() < probe_end and \
                not set(so.members) - {self.spec.address} <= so.lease.acked_since(since):
            time.sleep(0.01)
        done = threading.Event()
        box: list[Any] = []

        def finish(value: Any) -> None:
            box.append(value)
            done.set()

        def on_commit(_result: Any, error: int) -> None:
            finish(self._syncobj.raftCommitIndex if error == Outcome.SUCCESS else
                   MembershipRefused(f"the leader did not commit the change (PySyncObj "
                                     f"failure {error}); check `hastate members` and retry"))

        def on_tick_thread() -> None:
            try:
                change = self._membership_change(op, member, since)
            except HAStateError as exc:
                finish(exc)
                return
            self._syncobj.propose_change(change, on_commit)
            self._waker.wake()

        self.call_soon(on_tick_thread)
        if not done.wait(timeout):
            raise WriteTimeoutError(f"membership change not committed within {timeout:.1f}s; "
                                    "check `hastate members` before retrying",
                                    outcome_unknown=True)
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _membership_change(self, op: str, member: Member | str, since: float) -> Change:
        """Tick thread: the change to propose, or the reason to refuse it.

        Live members: this node and those that acknowledged a ping sent after ``since``.
        """
        so = self._syncobj
        if not self.is_leader():
            raise NotLeaderError("membership changes run on the leader", leader=self.leader_id())
        members = so.members
        if isinstance(member, str):  # remove by id: the full record lets a truncation undo it
            found = next((m for m in members.values() if m.id == member), None)
            if found is None:
                raise MembershipRefused(f"{member!r} is not a member; members: "
                                        f"{sorted(m.id for m in members.values())}")
            member = found
        pending = so.pending_change()
        if pending is not None:
            raise MembershipRefused(f"the previous membership change (log index {pending}) is "
                                    "not committed yet; one change at a time")
        if not so.caught_up_in_term():
            raise MembershipRefused("this leader has not committed an entry in its term yet; "
                                    "retry in a moment")
        change = Change(op, member)
        live = {self.spec.address} | so.lease.acked_since(since)
        reason = check_change(change, members, live, self.spec.address)
        if reason is not None:
            raise MembershipRefused(f"{op} {member.id} refused: {reason}")
        return change

    # -- leadership transfer ----------------------------------------------------------------
    def _on_transfer_request(self, target_address: str) -> None:
        """A follower asked this node (as leader) to hand leadership to ``target_address``."""
        self._begin_transfer(target_address, time.monotonic() + 2 * self.spec.profile.max_timeout)

    def _begin_transfer(self, target: str, deadline: float) -> None:
        """Tick thread: pause proposals and give up the lease until ``target`` leads."""
        so = self._syncobj
        if so.role != "leader" or self._transfer is not None:
            return
        so.paused = True
        so.lease.suspend()
        self._transfer = (target, deadline)

    def _drive_transfer(self) -> None:
        """Tick thread: once the target has every entry, send timeout-now; resume on failure."""
        if self._transfer is None:
            return
        target, deadline = self._transfer
        so = self._syncobj
        if so.role != "leader" or time.monotonic() > deadline:
            so.paused = False
            self._transfer = None
            return
        so.announce_transfer(target)

    def transfer_leadership(self, target_id: str, timeout: float | None = None) -> float:
        """Move leadership to ``target_id``; return seconds until it leads. Works from any node."""
        target_address = self.address_of(target_id)
        timeout = timeout if timeout is not None else 4 * self.spec.profile.max_timeout
        start = time.monotonic()
        deadline = start + timeout
        next_request = start
        while time.monotonic() < deadline:
            if self.leader_id() == target_id and self._target_confirmed(target_id):
                return time.monotonic() - start
            leader = self.leader_id()
            if time.monotonic() >= next_request and leader != target_id:
                next_request = time.monotonic() + self.spec.profile.max_timeout / 2
                if leader == self.spec.node_id:
                    self.call_soon(lambda: self._begin_transfer(target_address, deadline))
                elif leader is not None:
                    msg = {"type": TRANSFER_REQUEST, "target": target_address}
                    leader_address = self._syncobj.leader_address()
                    self.call_soon(lambda p=leader_address: self._syncobj.send(p, msg))
            time.sleep(0.01)
        raise FailoverError(f"leadership did not move to {target_id!r} within {timeout:.1f}s "
                            f"(leader now: {self.leader_id()!r}); is the target connected "
                            "and healthy?")

    def _target_confirmed(self, target_id: str) -> bool:
        if target_id == self.spec.node_id:
            return self.is_leader()
        return self._syncobj.role == "follower"
