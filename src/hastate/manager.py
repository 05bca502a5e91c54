"""StateManager: the bot's front door to the replicated state.

A write becomes one msgpack command with this manager's client id and a sequence number;
it is retried with the same id until it is applied or the timeout ends, and the state
machine applies each (client, seq) once, so a retry never applies a write twice.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

from concurrent.futures import Future

from hastate.config import ClusterConfig, SnapshotConfig, load_config
from hastate.consensus.backpressure import Admission, Limits
from hastate.consensus.journal import fdatasync
from hastate.consensus.membership import Member
from hastate.consensus.node import NodeSpec, RaftNode
from hastate.consensus.profiles import get_profile
from hastate.consensus.raft import HEALTH
from hastate.consensus.seed import is_empty, seed_data_dir
from hastate.consensus.transport import TransportSecurity, check_mode, make_transport_class
from hastate.errors import (ConfigError, ConflictError, NoQuorumError, NotLeaderError,
                            ReadError, SnapshotNotFoundError, WriteError)
from hastate.failover.lock import Lock
from hastate.failover.policy import (FailoverPolicy, FailoverSettings, HealthCheck,
                                     default_health_check)
from hastate.failover.watcher import BecomeLeader, LeaderWatcher, LoseLeadership
from hastate.observability import stats
from hastate.snapshots.service import SnapshotService
from hastate.state.codec import Command, check_key, encode_value
from hastate.state.machine import ReplicatedState
from hastate.writes import Proposer

logger = logging.getLogger(__name__)

Consistency = Literal["linearizable", "local"]


def _index(result: tuple) -> int:
    return result[1]


def _cas_revision(result: tuple) -> int:
    if result[0] == "conflict":
        raise ConflictError(result[1], result[2], result[3])
    return result[1]


class StateManager:
    """Embed a replica of the cluster's state in this process.

    Example::

        with StateManager.from_config("cluster/local.toml", instance_id="instance-1") as sm:
            sm.save_state({"model_version": "v1.2.3"})
            if sm.is_leader():
                place_orders(sm.get_state())
    """

    config: ClusterConfig | None = None

    def __init__(self, instance_id: str, peers: Mapping[str, str], *, region: str = "local",
                 data_dir: str | os.PathLike[str] | None = None, profile: str = "lan",
                 cluster_secret: str | None = None, cluster_name: str = "hastate",
                 write_timeout: float = 10.0, transport: TransportSecurity | None = None,
                 log_compaction_entries: int = 5000,
                 snapshots: SnapshotConfig | None = None,
                 members: Iterable[Member] = (), join: bool = False,
                 limits: Limits | None = None) -> None:
        if instance_id not in peers:
            raise ConfigError(f"instance {instance_id!r} is not in peers {sorted(peers)}; "
                              "peers must list every node, this one included",
                              field="instance_id", value=instance_id)
        try:
            timing = get_profile(profile)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), field="profile", value=profile) from None
        self.instance_id = instance_id
        self.region = region
        self.write_timeout = write_timeout
        data = Path(data_dir) if data_dir is not None else Path("hastate-data") / instance_id
        self.spec = NodeSpec(node_id=instance_id, address=peers[instance_id],
                             peers={k: v for k, v in peers.items() if k != instance_id},
                             cluster=cluster_name, data_dir=data, profile=timing,
                             log_compaction_entries=log_compaction_entries,
                             members=tuple(members), join=join,
                             limits=limits if limits is not None else Limits())
        self.machine = ReplicatedState()
        self._health_ok = True
        if transport is None:
            transport = TransportSecurity(mode="psk", psk=cluster_secret.encode()) \
                if cluster_secret else TransportSecurity(mode="plaintext")
        check_mode(transport.mode, peers.values())
        self.transport = transport
        self.node = RaftNode(self.spec, self.machine,
                             transport_class=make_transport_class(transport),
                             journal_sync=stats.for_node(instance_id).journal.timed(fdatasync),
                             is_healthy=lambda: self._health_ok)
        self._client_id = uuid.uuid4().bytes
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self._recovery: Callable[[dict[str, Any]], None] | None = None
        self._policy: FailoverPolicy | None = None
        self.watcher = LeaderWatcher(self.node.is_leader, self.node.fencing_token,
                                     on_transition=self._on_transition)
        # observe(op, seconds, outcome); outcome: ok, conflict, no_quorum, timeout,
        # overloaded, error.
        self.proposal_observers: list[Callable[[str, float, str], None]] = []
        self._writes = Proposer(
            self.node, Admission(self.spec.limits.max_uncommitted_entries,
                                 self.spec.limits.max_uncommitted_bytes),
            client_id=self._client_id, next_seq=self._next_seq,
            observers=self.proposal_observers, attempt_timeout=2 * timing.max_timeout,
            leaderless_give_up=3 * timing.max_timeout, instance_id=instance_id)
        self.failovers_total = {"manual": 0, "health": 0}   # completed transfers started here
        self.health_check_failures = 0
        self.snapshot_settings = snapshots if snapshots is not None and snapshots.store else None
        self.snapshots: SnapshotService | None = None
        self._started = False

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | ClusterConfig, instance_id: str,
                    **kwargs: Any) -> "StateManager":
        """Build the manager for ``instance_id`` from a cluster file (or a loaded config)."""
        cfg = config if isinstance(config, ClusterConfig) else load_config(config)
        node = cfg.node(instance_id)
        ids = {n.raft: n.id for n in cfg.nodes}
        if cfg.transport == "tls":
            ca, cert, key = cfg.tls.for_node(instance_id)
            security = TransportSecurity(mode="tls", ca=ca, cert=cert, key=key, node_ids=ids)
        elif cfg.transport == "psk":
            security = TransportSecurity(mode="psk", psk=cfg.secret().encode(), node_ids=ids)
        else:
            security = TransportSecurity(mode="plaintext", node_ids=ids)
        manager = cls(instance_id, {n.id: n.raft for n in cfg.nodes}, region=node.region,
                      data_dir=node.data_dir, profile=cfg.profile, transport=security,
                      cluster_name=cfg.name, snapshots=cfg.snapshots,
                      members=cfg.members(), limits=cfg.limits,
                      **kwargs)
        manager.config = cfg
        return manager

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, wait_ready: float | None = None) -> "StateManager":
        """Start the Raft node; with ``wait_ready`` wait that long for a known leader."""
        if self.snapshot_settings is not None:
            if self.snapshot_settings.restore_if_empty:
                self._restore_if_empty()
            self.snapshots = SnapshotService(
                self.snapshot_settings, cluster=self.spec.cluster, machine=self.machine,
                is_leader=self.is_leader, term=lambda: self.node.syncobj.raftCurrentTerm)
        self.node.start()
        if self.snapshots is not None:
            self.snapshots.start()
        self.watcher.start()
        # Health is always checked and told to peers (they pick failover targets with it);
        # handing leadership over on failure starts only with configure_failover().
        self._install_policy(FailoverSettings(1.0, float("inf")), None)
        self._started = True
        logger.info("state manager started", extra={"instance": self.instance_id,
                                                    "region": self.region})
        if wait_ready:
            self.wait_ready(wait_ready)
        return self

    def _restore_if_empty(self) -> None:
        """A node starting with an empty data_dir seeds it from the newest snapshot + log."""
        if not is_empty(self.spec.data_dir):
            return
        from hastate.snapshots.restore import rebuild
        from hastate.snapshots.store import open_store
        try:
            result = rebuild(open_store(self.snapshot_settings.store), self.spec.cluster)
        except SnapshotNotFoundError:
            logger.info("restore_if_empty: no snapshot in the store; starting empty")
            return
        seed_data_dir(self.spec.data_dir, cluster=self.spec.cluster, node_id=self.instance_id,
                      state_body=result.machine.to_body(), index=result.index,
                      term=result.term, members=self.spec.bootstrap())
        logger.warning("restore_if_empty: seeded %s from %s at index %d", self.spec.data_dir,
                       result.snapshot.name, result.index)

    def wait_ready(self, timeout: float) -> None:
        """Block until a leader is known and this node has applied up to the commit index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.02)
        raise NoQuorumError(f"no leader within {timeout:.1f}s (instance {self.instance_id}); "
                            "are a majority of the nodes running and reachable?",
                            outcome_unknown=False)

    def ready(self) -> bool:
        """A leader is known and this node has applied everything it knows is committed."""
        so = self.node.syncobj
        return self.node.running and so.leader_address() is not None and \
            so.raftLastApplied >= so.raftCommitIndex

    def stop(self) -> None:
        """Stop health checks, leadership callbacks and the Raft node."""
        if self._policy is not None:
            self._policy.stop()
        if self.snapshots is not None:
            self.snapshots.stop()
        self.watcher.stop()
        self.node.stop()
        self._writes.close()
        self._started = False

    def __enter__(self) -> "StateManager":
        return self.start() if not self._started else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- writes -------------------------------------------------------------------------------
    def save_state(self, values: Mapping[str, Any], *, timeout: float | None = None) -> int:
        """Merge ``values`` into the state atomically (one log entry).

        Returns the log index the write was applied at, once it is committed and applied on
        this node. Raises TypeError before proposing when a value cannot be stored,
        OverloadedError (not applied; retry after ``retry_after``) when too many writes
        wait to commit, and WriteError (``outcome_unknown`` says whether it may still
        apply) on timeout.
        """
        return self.save_state_async(values, timeout=timeout).result()

    def save_state_async(self, values: Mapping[str, Any], *,
                         timeout: float | None = None) -> "Future[int]":
        """:meth:`save_state` without waiting: a future of the log index, same errors.

        Pipelining: many writes may be in flight, each applied at most once (exactly once
        when its future succeeds); writes that must apply in order should wait for each
        other. Future callbacks run on the Raft thread: keep them short, never block there.
        """
        encoded = {check_key(k): encode_value(k, v) for k, v in values.items()}
        if not encoded:
            raise ValueError("save_state needs at least one key")
        return self._submit(Command(op="update", values=encoded), timeout, _index)

    def delete(self, *keys: str, timeout: float | None = None) -> int:
        """Remove ``keys`` atomically; missing keys are ignored. Returns the log index."""
        return self.delete_async(*keys, timeout=timeout).result()

    def delete_async(self, *keys: str, timeout: float | None = None) -> "Future[int]":
        """:meth:`delete` without waiting: a future of the log index."""
        if not keys:
            raise ValueError("delete needs at least one key")
        return self._submit(Command(op="delete", keys=tuple(check_key(k) for k in keys)),
                            timeout, _index)

    def compare_and_set(self, key: str, value: Any, expected_revision: int, *,
                        timeout: float | None = None) -> int:
        """Set ``key`` only if its revision is ``expected_revision`` (0 = must not exist).

        Returns the new revision; raises ConflictError naming the actual revision otherwise.
        """
        return self.compare_and_set_async(key, value, expected_revision,
                                          timeout=timeout).result()

    def compare_and_set_async(self, key: str, value: Any, expected_revision: int, *,
                              timeout: float | None = None) -> "Future[int]":
        """:meth:`compare_and_set` without waiting: a future of the new revision."""
        command = Command(op="cas", values={check_key(key): encode_value(key, value)},
                          expected={key: int(expected_revision)})
        return self._submit(command, timeout, _cas_revision)

    def _submit(self, command: Command, timeout: float | None,
                finish: Callable[[tuple], Any]) -> Future:
        return self._writes.submit(command, timeout if timeout is not None
                                   else self.write_timeout, finish)

    def _write(self, command: Command, timeout: float | None) -> tuple:
        """Propose ``command`` and wait; returns the state machine's result tuple."""
        return self._submit(command, timeout, lambda result: result).result()

    def _next_seq(self) -> int:
        with self._seq_lock:
            return next(self._seq)

    def _propose_until_applied(self, raw: bytes, timeout: float) -> tuple:
        """Propose an encoded command (client id and seq already set) until applied."""
        return self._writes.propose(raw, timeout).result()

    # -- reads --------------------------------------------------------------------------------
    def get_state(self, consistency: Consistency = "linearizable", *,
                  keys: Iterable[str] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """A copy of the state (or of ``keys``).

        ``linearizable`` (default) reflects every write acknowledged anywhere before the
        call: a leader holding its lease reads locally, any other node first passes a barrier
        through the log. ``local`` reads this replica without a round trip (may be stale).
        """
        if consistency == "linearizable":
            if not self._lease_read_ok():
                try:
                    self._write(Command(op="barrier"), timeout)
                except WriteError as exc:
                    raise ReadError(f"linearizable read failed: {exc}") from None
        elif consistency != "local":
            raise ValueError(f"consistency must be 'linearizable' or 'local', not {consistency!r}")
        return self.machine.snapshot(keys)

    def _lease_read_ok(self) -> bool:
        return self.node.is_leader() and self.node.syncobj.caught_up_in_term()

    def revisions(self) -> dict[str, int]:
        """Log index of the last change of every key (for compare_and_set)."""
        return self.machine.revisions()

    # -- leadership ---------------------------------------------------------------------------
    def is_leader(self) -> bool:
        """True only while this node leads *and* holds its lease: safe to act on now."""
        return self.node.is_leader()

    def fencing_token(self) -> int | None:
        """A number that grows with every leadership change; None when not leading."""
        return self.node.fencing_token()

    def leader(self) -> str | None:
        """Instance id of the last known leader."""
        return self.node.leader_id()

    def watch_leader(self, on_become_leader: BecomeLeader | None = None,
                     on_lose_leadership: LoseLeadership | None = None) -> None:
        """Call ``on_become_leader([fencing_token])`` / ``on_lose_leadership()`` on transitions.

        Callbacks run on hastate's watcher thread, once per transition, never on Raft's.
        """
        self.watcher.subscribe(on_become_leader, on_lose_leadership)

    def lock(self, name: str, ttl: float = 10.0, **kwargs: Any) -> Lock:
        """A :class:`~hastate.failover.lock.Lock` named ``name`` on this manager.

        The same as ``Lock(self, name, ttl, **kwargs)`` (kazoo's ``partial(Lock, self)``);
        grants carry fencing tokens (log indexes, strictly increasing). Example::

            with sm.lock("order-router", ttl=10.0, auto_renew=True) as grant:
                exchange.submit(order, fencing_token=grant.token)
        """
        return Lock(self, name, ttl, **kwargs)

    def _on_transition(self, leading: bool, _token: int | None) -> None:
        if leading and self._recovery is not None:
            state = self.get_state("linearizable")
            self._recovery(state)

    def configure_failover(self, health_check_interval: float = 5.0,
                           failover_timeout: float = 15.0,
                           recovery_callback: Callable[[dict[str, Any]], None] | None = None,
                           health_check: HealthCheck | None = None) -> None:
        """Enable health-driven failover and a recovery hook for new leaders."""
        if health_check_interval <= 0 or failover_timeout < 0:
            raise ConfigError("health_check_interval must be > 0 and failover_timeout >= 0",
                              field="configure_failover",
                              value=(health_check_interval, failover_timeout))
        self._recovery = recovery_callback
        self._install_policy(FailoverSettings(health_check_interval, failover_timeout),
                             health_check)

    def _install_policy(self, settings: FailoverSettings, check: HealthCheck | None) -> None:
        if self._policy is not None:
            self._policy.stop()
        check = check or default_health_check(lambda: self.node.running, self.spec.data_dir)
        self._policy = FailoverPolicy(settings, check, is_leader=self.is_leader,
                                      publish=self._publish_health,
                                      pick_target=self._pick_failover_target,
                                      transfer=lambda target: self.trigger_failover(
                                          target, reason="health"))
        self._policy.start()

    def _publish_health(self, ok: bool) -> None:
        self._health_ok = ok
        if not ok:
            self.health_check_failures += 1
        message = {"type": HEALTH, "healthy": ok, "applied": self.machine.applied_index}
        self.node.call_soon(lambda: self.node.syncobj.send(None, message))

    def _pick_failover_target(self) -> str | None:
        so = self.node.syncobj
        fresh = time.monotonic() - 3 * self._policy.settings.health_check_interval
        match = so.match_index()
        candidates = [(match.get(addr, 0), self.node.id_of(addr))
                      for addr, (ok, _applied, when) in dict(so.peer_health).items()
                      if ok and when >= fresh and addr in so.connected_peers()]
        return max(candidates)[1] if candidates else None

    def trigger_failover(self, target_instance: str | None = None, *,
                         timeout: float | None = None, reason: str = "manual") -> float:
        """Move leadership to ``target_instance`` (or the most caught-up healthy peer).

        Works from any node, under write load; returns the seconds it took. ``reason``
        ("manual" or "health") labels the completed transfer in ``status()["failovers"]``.
        """
        if target_instance is None:
            if not self.is_leader():
                raise NotLeaderError("trigger_failover without a target must run on the leader",
                                     leader=self.leader())
            target_instance = self._pick_failover_target()
            if target_instance is None:
                match = self.node.syncobj.match_index()
                if not match:
                    raise NotLeaderError("no peer to hand leadership to")
                target_instance = self.node.id_of(max(match, key=match.get))
        seconds = self.node.transfer_leadership(target_instance, timeout)
        self.failovers_total[reason] = self.failovers_total.get(reason, 0) + 1
        return seconds

    # -- membership ---------------------------------------------------------------------------
    def members(self) -> list[Member]:
        """The voters in this node's configuration (committed or about to be), sorted by id."""
        return self.node.members()

    def add_member(self, member: Member, *, timeout: float | None = None) -> int:
        """Leader: add a voter; returns the commit index once the change is committed.

        Start the new node first (``hastate node run --join``): the change is refused if
        the members reachable now would not be a majority of the new configuration.
        """
        return self.node.change_membership("add", member, timeout or self.write_timeout)

    def remove_member(self, instance_id: str, *, timeout: float | None = None) -> int:
        """Leader: remove a voter (not the leader itself: move leadership first)."""
        return self.node.change_membership("remove", instance_id, timeout or self.write_timeout)

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What operators ask first: who leads, how far each node got, who is connected."""
        so = self.node.syncobj
        now = time.monotonic()
        leading = self.node.is_leader()
        match = so.match_index() if so.role == "leader" else {}
        contact = so.last_contact() if so.role == "leader" else {}
        connected = so.connected_peers()
        peers = {}
        last_index = so.last_log_index()
        members = self.node.members()
        for member in members:
            if member.id == self.instance_id:
                continue
            addr = member.raft
            peers[member.id] = {
                "address": addr,
                "connected": addr in connected,
                "match_index": match.get(addr),
                "lag": last_index - match[addr] if addr in match else None,
                "last_contact_age": round(now - contact[addr], 3) if addr in contact else None,
            }
        return {
            "id": self.instance_id,
            "region": self.region,
            "cluster": self.spec.cluster,
            "role": so.role if so.role != "leader" or leading else "leader-without-lease",
            "is_leader": leading,
            "term": so.raftCurrentTerm,
            "leader": self.node.leader_id(),
            "fencing_token": self.node.fencing_token(),
            "lease_remaining": round(so.lease.remaining(), 3),
            "commit_index": so.raftCommitIndex,
            "applied_index": so.raftLastApplied,
            "last_log_index": last_index,
            "log_entries": so.log_length(),
            "dumps": self.node.dumper.stats(),
            **self._writes.status(so),
            "keys": len(self.machine),
            "leader_changes": self.node.leader_changes,
            "healthy": self._health_ok,
            "health_check_failures": self.health_check_failures,
            "failovers": dict(self.failovers_total),
            "profile": self.spec.profile.name,
            "ready": self.ready(),
            "fatal_error": self.node.fatal_error,
            "snapshots": self.snapshots.status() if self.snapshots is not None else None,
            "member": so.is_member,
            "members": [m.to_dict() for m in members],
            "peers": peers,
        }
