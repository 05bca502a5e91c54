"""The embedded engine: the state replicated by hastate's own Raft cluster (PySyncObj).

Every instance holds a full replica (:class:`~hastate.state.machine.ReplicatedState`) fed by
the Raft log; writes are proposed through :class:`~hastate.writes.Proposer` (exactly-once
retries, back-pressure); local reads and watches are served from the replica; the leader
holds a lease, so its linearizable reads need no round trip. Lease expiry and the snapshot
uploader run beside the node.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, TypeVar

from hastate.config import SnapshotConfig
from hastate.consensus.backpressure import Admission, Limits
from hastate.consensus.journal import fdatasync
from hastate.consensus.membership import Member
from hastate.consensus.node import NodeSpec, RaftNode
from hastate.consensus.profiles import TimingProfile
from hastate.consensus.seed import is_empty, seed_data_dir
from hastate.consensus.transport import TransportSecurity, make_transport_class
from hastate.engines import Options
from hastate.engines.contract import Consistency
from hastate.errors import ReadError, SnapshotNotFoundError, WriteError
from hastate.observability import stats
from hastate.observability.operations import traced_write
from hastate.snapshots.service import SnapshotService
from hastate.state.codec import Command
from hastate.state.export import StateExport
from hastate.state.housekeeping import LeaseExpirer
from hastate.state.leases import LeaseInfo
from hastate.state.machine import ChangeListener, ReplicatedState
from hastate.state.txn import Record
from hastate.state.watch import Watcher, WatchHub
from hastate.writes import Observer, Proposer

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RaftEngine:
    """One replica of an embedded Raft cluster (see the module docstring)."""

    name = "raft"

    def __init__(self, spec: NodeSpec, transport: TransportSecurity, *,
                 snapshots: SnapshotConfig | None, watch_history: int, watch_buffer: int,
                 observers: list[Observer], write_timeout: float) -> None:
        self.spec = spec
        self.instance_id = spec.node_id
        self.cluster = spec.cluster
        self.write_timeout = write_timeout
        self.transport = transport
        self.machine = ReplicatedState()
        self.watch_hub = WatchHub(watch_history, watch_buffer)
        self.machine.add_change_listener(self.watch_hub)
        self._health_ok = True
        self.node = RaftNode(spec, self.machine,
                             transport_class=make_transport_class(transport),
                             journal_sync=stats.for_node(spec.node_id).journal.timed(fdatasync),
                             is_healthy=lambda: self._health_ok)
        self.client_id = uuid.uuid4().bytes
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        timing: TimingProfile = spec.profile
        self.writes = Proposer(
            self.node, Admission(spec.limits.max_uncommitted_entries,
                                 spec.limits.max_uncommitted_bytes),
            client_id=self.client_id, next_seq=self.next_seq, observers=observers,
            attempt_timeout=2 * timing.max_timeout, leaderless_give_up=3 * timing.max_timeout,
            instance_id=spec.node_id)
        self.snapshot_settings = snapshots if snapshots is not None and snapshots.store else None
        self.snapshots: SnapshotService | None = None
        self.lease_expirer = LeaseExpirer(self.machine, leader_term=self.fencing_token,
                                          propose=self._propose)

    @property
    def data_dir(self) -> Path:
        """Where this replica keeps its journal and dumps."""
        return self.spec.data_dir

    @traced_write
    def _propose(self, command: Command, timeout: float | None = None) -> tuple:
        """Propose one of the engine's own commands (barrier, housekeeping) and wait."""
        return self.submit(command, timeout or self.write_timeout,
                           lambda result: result).result()

    def next_seq(self) -> int:
        """The next sequence number of this replica's client id (one counter per engine)."""
        with self._seq_lock:
            return next(self._seq)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self.snapshot_settings is not None:
            if self.snapshot_settings.restore_if_empty:
                self._restore_if_empty()
            self.snapshots = SnapshotService(
                self.snapshot_settings, cluster=self.spec.cluster, machine=self.machine,
                is_leader=self.is_leader, term=self.node.term)
        self.node.start()
        stats.attach_raft(self.node, self.instance_id, self.spec.data_dir)
        if self.snapshots is not None:
            self.snapshots.start()
        self.lease_expirer.start()

    def _restore_if_empty(self) -> None:
        """A node starting with an empty data_dir seeds it from the newest snapshot + log."""
        if not is_empty(self.spec.data_dir):
            return
        from hastate.snapshots.restore import rebuild
        from hastate.snapshots.stores import open_store
        try:
            result = rebuild(open_store(self.snapshot_settings.store), self.spec.cluster)
        except SnapshotNotFoundError:
            logger.info("restore_if_empty: no snapshot in the store; starting empty")
            return
        seed_data_dir(self.spec.data_dir, cluster=self.spec.cluster,
                      node_id=self.spec.node_id, state_body=result.machine.to_body(),
                      index=result.index, term=result.term, members=self.spec.bootstrap())
        logger.warning("restore_if_empty: seeded %s from %s at index %d", self.spec.data_dir,
                       result.snapshot.name, result.index)

    def stop(self) -> None:
        if self.snapshots is not None:
            self.snapshots.stop()
        self.lease_expirer.stop()
        self.node.stop()
        self.writes.close()
        self.watch_hub.close()

    @property
    def running(self) -> bool:
        return self.node.running

    def ready(self) -> bool:
        st = self.node.status()
        return self.node.running and st.leader_address is not None and \
            st.applied_index >= st.commit_index

    def healthy(self) -> bool:
        """The Raft thread runs and the data directory accepts a synced write."""
        if not self.node.running:
            return False
        try:
            with tempfile.NamedTemporaryFile(dir=self.spec.data_dir, prefix=".health-") as f:
                f.write(b"ok")
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            return False
        return True

    def fatal_error(self) -> str | None:
        return self.node.fatal_error

    def log_context(self) -> dict[str, Any]:
        try:
            return {"term": self.node.term(), "role": self.node.role()}
        except Exception:   # not started yet or stopped
            return {"term": None, "role": None}

    # -- writes -------------------------------------------------------------------------
    def submit(self, command: Command, timeout: float,
               finish: Callable[[tuple], T]) -> "Future[T]":
        return self.writes.submit(command, timeout, finish)

    # -- reads --------------------------------------------------------------------------
    def read(self, keys: Iterable[str] | None, consistency: Consistency,
             timeout: float | None) -> tuple[dict[str, Any], int]:
        if consistency == "linearizable":
            self._linearize(timeout)
        elif consistency != "local":
            raise ValueError(f"consistency must be 'linearizable' or 'local', not {consistency!r}")
        return self.machine.snapshot_at(keys)

    def _linearize(self, timeout: float | None) -> None:
        """Make this replica reflect every write acknowledged before the call.

        A leader holding its lease and caught up in its term reads locally; any other
        replica first passes a barrier through the log.
        """
        if self.node.is_leader() and self.node.caught_up_in_term():
            return
        try:
            self._propose(Command(op="barrier"), timeout)
        except WriteError as exc:
            raise ReadError(f"linearizable read failed: {exc}") from None

    def records(self, keys: Iterable[str]) -> dict[str, Record]:
        return self.machine.records(keys)

    def scan(self, prefix: str) -> tuple[list[tuple[str, Record]], int]:
        return self.machine.scan(prefix)

    def add_change_listener(self, listener: ChangeListener) -> None:
        self.machine.add_change_listener(listener)

    def revisions(self) -> dict[str, int]:
        return self.machine.revisions()

    def revision(self) -> int:
        return self.machine.revision

    def key_count(self) -> int:
        return len(self.machine)

    def state_hash(self) -> str:
        return self.machine.state_hash()

    def export(self, timeout: float | None) -> StateExport:
        """The replica's state captured after a linearizing barrier (one revision)."""
        self._linearize(timeout)
        return self.machine.export()

    # -- leases -------------------------------------------------------------------------
    def leases(self) -> dict[int, LeaseInfo]:
        return self.machine.leases()

    def has_lease(self, lease_id: int) -> bool:
        return self.machine.has_lease(lease_id)

    def lease_expiry(self) -> dict[int, float]:
        return self.lease_expirer.time_left()

    # -- watch --------------------------------------------------------------------------
    def watch(self, prefix: str, start_revision: int | None, *, prev_value: bool,
              progress_interval: float | None, buffer: int | None) -> Watcher:
        return self.watch_hub.watch(prefix, start_revision, prev_value=prev_value,
                                    progress_interval=progress_interval, buffer=buffer)

    def watchers(self) -> int:
        return len(self.watch_hub)

    # -- leadership ---------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.node.is_leader()

    def fencing_token(self) -> int | None:
        return self.node.fencing_token()

    def leader(self) -> str | None:
        return self.node.leader_id()

    def transfer(self, target: str, timeout: float | None) -> float:
        return self.node.transfer_leadership(target, timeout)

    def failover_candidates(self, fresh_after: float | None) -> list[tuple[int, str]]:
        st = self.node.status()
        if fresh_after is None:
            return [(index, self.node.id_of(addr)) for addr, index in st.match_index.items()]
        return [(st.match_index.get(addr, 0), self.node.id_of(addr))
                for addr, (ok, _applied, when) in st.peer_health.items()
                if ok and when >= fresh_after and addr in st.connected]

    def publish_health(self, ok: bool) -> None:
        self._health_ok = ok
        self.node.publish_health(ok, self.machine.applied_index)

    # -- membership and status ----------------------------------------------------------
    def members(self) -> list[Member]:
        return self.node.members()

    def change_membership(self, action: Literal["add", "remove"], member: Member | str,
                          timeout: float) -> int:
        return self.node.change_membership(action, member, timeout)

    def status(self) -> dict[str, Any]:
        st = self.node.status()
        now = time.monotonic()
        match = st.match_index if st.role == "leader" else {}
        contact = st.last_contact if st.role == "leader" else {}
        last_index = st.last_log_index
        peers = {}
        for member in st.members:
            if member.id == self.spec.node_id:
                continue
            addr = member.raft
            peers[member.id] = {
                "address": addr,
                "connected": addr in st.connected,
                "match_index": match.get(addr),
                "lag": last_index - match[addr] if addr in match else None,
                "last_contact_age": round(now - contact[addr], 3) if addr in contact else None,
            }
        return {
            "role": st.role if st.role != "leader" or st.is_leader else "leader-without-lease",
            "is_leader": st.is_leader,
            "term": st.term,
            "leader": st.leader_id,
            "fencing_token": st.fencing_token,
            "lease_remaining": round(st.lease_remaining, 3),
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "last_log_index": last_index,
            "log_entries": st.log_entries,
            "dumps": self.node.dumper.stats(),
            "uncommitted_entries": st.uncommitted_entries,
            "queued_proposals": st.queued_proposals,
            "behind_leader_entries": st.behind_leader_entries,
            **self.writes.status(),
            "lease_expiries": self.machine.lease_expiries,
            "leader_changes": st.leader_changes,
            "profile": self.spec.profile.name,
            "prevotes_started": st.prevotes_started,
            **stats.for_node(self.instance_id).as_dict(),
            "fatal_error": st.fatal_error,
            "snapshots": self.snapshots.status() if self.snapshots is not None else None,
            "member": st.is_member,
            "members": [m.to_dict() for m in st.members],
            "peers": peers,
        }


def build(instance_id: str, peers: dict[str, str], *, cluster: str, data_dir: Path,
          profile: TimingProfile, transport: TransportSecurity, snapshots: SnapshotConfig | None,
          members: tuple[Member, ...], join: bool, limits: Limits,
          log_compaction_entries: int, options: Options) -> RaftEngine:
    """A :class:`RaftEngine` for ``instance_id`` of a cluster whose nodes are ``peers``."""
    spec = NodeSpec(node_id=instance_id, address=peers[instance_id],
                    peers={k: v for k, v in peers.items() if k != instance_id},
                    cluster=cluster, data_dir=data_dir, profile=profile,
                    log_compaction_entries=log_compaction_entries, members=members, join=join,
                    limits=limits)
    return RaftEngine(spec, transport, snapshots=snapshots,
                      watch_history=options.watch_history, watch_buffer=options.watch_buffer,
                      observers=options.observers, write_timeout=options.write_timeout)
