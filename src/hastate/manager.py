"""StateManager: the bot's front door to the replicated state.

A write becomes one msgpack command with this manager's client id and a sequence number;
it is retried with the same id until it is applied or the timeout ends, and the state
machine applies each (client, seq) once, so a retry never applies a write twice.

Length: the whole public API of an embedded replica (writes, reads, leadership, failover,
membership, status); each method is a thin delegate to the module that does the work.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Literal, Mapping

from hastate import embedded
from hastate.addresses import check_transport_mode
from hastate.config import ClusterConfig, SnapshotConfig
from hastate.consensus.backpressure import Admission, Limits
from hastate.consensus.journal import fdatasync
from hastate.consensus.membership import Member
from hastate.consensus.node import NodeSpec, RaftNode
from hastate.consensus.profiles import get_profile
from hastate.consensus.seed import is_empty, seed_data_dir
from hastate.consensus.transport import TransportSecurity, make_transport_class
from hastate.durations import Duration, optional_duration, parse_duration
from hastate.errors import (ConfigError, ConflictError, LeaseNotFoundError, NoQuorumError,
                            NotLeaderError, ReadError, SnapshotNotFoundError, WriteError)
from hastate.recipes import lease as lease_recipe
from hastate.recipes.cache import Cache
from hastate.recipes.lease import Lease
from hastate.recipes.presence import Presence, members_alive
from hastate.events import EventStreams, ManagerBackend
from hastate.events.index import EventIndex
from hastate.recipes.lock import Lock
from hastate.failover.policy import (FailoverPolicy, FailoverSettings, HealthCheck,
                                     default_health_check)
from hastate.failover.watcher import BecomeLeader, LeaderWatcher, LoseLeadership
from hastate.observability import stats
from hastate.observability.operations import (traced_add_member, traced_failover,
                                              traced_read, traced_remove_member,
                                              traced_write)
from hastate.observability.logs import bind_node, configure_logging
from hastate.server.http import NodeHTTPServer
from hastate.snapshots.service import SnapshotService
from hastate.state import txn as txn_mod
from hastate.state.codec import Command, check_key, encode_value
from hastate.state.history import DEFAULT_HISTORY
from hastate.state.housekeeping import LeaseExpirer, LockJanitor
from hastate.state.leases import LeaseInfo
from hastate.state.machine import ReplicatedState
from hastate.state.txn import Compare, Op, TxnResult
from hastate.state.watch import DEFAULT_BUFFER, WatchEvent, Watcher, WatchHub, run_callback
from hastate.writes import Proposer

logger = logging.getLogger(__name__)

Consistency = Literal["linearizable", "local"]



def _revision(result: tuple) -> int:
    return result[1]


class StateManager:
    """Embed a replica of the cluster's state in this process.

    Example (the cluster file found through ``$HASTATE_CONFIG``; started at once)::

        sm = StateManager(project_id="crypto-bot-prod", instance_id="instance-1",
                          region="asia-northeast1")
        sm.save_state({"model_version": "v1.2.3"})
        if sm.is_leader():
            place_orders(sm.get_state())

    or, started and stopped by hand::

        with StateManager.from_config("cluster/local.toml", instance_id="instance-1") as sm:
            ...
    """

    config: ClusterConfig | None = None

    def __init__(self, instance_id: str, peers: Mapping[str, str] | None = None, *,
                 project_id: str | None = None,
                 config: str | os.PathLike[str] | ClusterConfig | None = None,
                 region: str | None = None,
                 data_dir: str | os.PathLike[str] | None = None, profile: str = "lan",
                 cluster_secret: str | None = None, cluster_name: str = "hastate",
                 write_timeout: Duration = 10.0, transport: TransportSecurity | None = None,
                 log_compaction_entries: int = 5000,
                 snapshots: SnapshotConfig | None = None,
                 members: Iterable[Member] = (), join: bool = False,
                 http: str | None = None, serve_http: bool = True,
                 admin_token: str | None = None, autostart: bool | None = None,
                 watch_history: int | None = None, watch_buffer: int | None = None,
                 txn_max_ops: int = txn_mod.DEFAULT_MAX_OPS,
                 txn_max_bytes: int = txn_mod.DEFAULT_MAX_BYTES,
                 limits: Limits | None = None) -> None:
        """Two ways in, one node underneath.

        * From a cluster file (no ``peers``): ``StateManager(project_id="crypto-bot-prod",
          instance_id="instance-1", region="asia-northeast1")`` finds the file
          (``$HASTATE_CONFIG``, ``./hastate.toml``, ``/etc/hastate/cluster.toml``; or
          ``config=``), checks ``project_id`` against ``[cluster] name`` and ``region``
          against the node's, and takes everything else from the file. A manager whose
          file was found this way starts at once and stops at interpreter exit.
        * Explicit (``peers`` = every node's id -> raft address): the other arguments.

        The node serves its HTTP endpoints on ``http`` (the file's ``http`` of this node)
        unless ``serve_http=False``; ``admin_token`` defaults to the file's
        ``admin_token_env`` variable. ``autostart`` overrides when to start.
        ``watch_history``, ``watch_buffer`` and ``limits`` (back-pressure) default to the
        file's settings (else
        :data:`~hastate.state.history.DEFAULT_HISTORY` / :data:`~hastate.state.watch.DEFAULT_BUFFER`).
        """
        if peers is None:
            embedded.refuse_mixed(from_file=True, data_dir=data_dir, cluster_secret=cluster_secret,
                                  transport=transport, snapshots=snapshots, http=http,
                                  members=tuple(members),
                                  profile=None if profile == "lan" else profile,
                                  cluster_name=None if cluster_name == "hastate" else cluster_name)
            cfg = embedded.resolve_config(config)
            wiring = embedded.file_wiring(cfg, instance_id, project_id=project_id,
                                          region=region, admin_token=admin_token)
            if autostart is None:
                autostart = config is None
        else:
            embedded.refuse_mixed(from_file=False, project_id=project_id, config=config)
            if instance_id not in peers:
                raise ConfigError(f"instance {instance_id!r} is not in peers {sorted(peers)}; "
                                  "peers must list every node, this one included",
                                  field="instance_id", value=instance_id)
            wiring = embedded.explicit_wiring(
                instance_id, peers, region=region, data_dir=data_dir, profile=profile,
                cluster_secret=cluster_secret, cluster_name=cluster_name, transport=transport,
                snapshots=snapshots, members=members, http=http, admin_token=admin_token)
        try:
            timing = get_profile(wiring.profile)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), field="profile", value=wiring.profile) from None
        peers = wiring.peers
        self.config = wiring.config
        self.instance_id = instance_id
        self.region = wiring.region
        self.write_timeout = parse_duration(write_timeout, field="write_timeout", minimum=0.001)
        self.spec = NodeSpec(node_id=instance_id, address=peers[instance_id],
                             peers={k: v for k, v in peers.items() if k != instance_id},
                             cluster=wiring.cluster_name, data_dir=wiring.data_dir,
                             profile=timing, log_compaction_entries=log_compaction_entries,
                             members=wiring.members, join=join,
                             limits=limits if limits is not None else
                             self.config.limits if self.config is not None else Limits())
        if watch_history is None:
            watch_history = self.config.watch_history if self.config is not None \
                else DEFAULT_HISTORY
        if watch_buffer is None:
            watch_buffer = self.config.watch_buffer if self.config is not None \
                else DEFAULT_BUFFER
        for name, number in (("watch_history", watch_history), ("watch_buffer", watch_buffer),
                             ("txn_max_ops", txn_max_ops), ("txn_max_bytes", txn_max_bytes)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ConfigError("must be an integer >= 1", field=name, value=number)
        self.txn_limits = {"max_ops": txn_max_ops, "max_bytes": txn_max_bytes}
        self.machine = ReplicatedState()
        self.watch_hub = WatchHub(watch_history, watch_buffer)
        self.machine.add_change_listener(self.watch_hub)
        self.event_index = EventIndex(self.machine)          # after the hub: see its docstring
        self.machine.add_change_listener(self.event_index)
        self._health_ok = True
        check_transport_mode(wiring.transport.mode, peers.values())
        self.transport = wiring.transport
        self.node = RaftNode(self.spec, self.machine,
                             transport_class=make_transport_class(wiring.transport),
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
        snaps = wiring.snapshots
        self.snapshot_settings = snaps if snaps is not None and snaps.store else None
        self.snapshots: SnapshotService | None = None
        self.http_address = wiring.http if serve_http else None
        self.admin_token = wiring.admin_token
        self.http_server: NodeHTTPServer | None = None
        self.janitor = LockJanitor(self.machine, is_leader=self.is_leader,
                                   propose=lambda command: self._write(command, None))
        self.lease_expirer = LeaseExpirer(self.machine, leader_term=self.fencing_token,
                                          propose=lambda command: self._write(command, None))
        self._started = False
        self._lifecycle = threading.Lock()
        configure_logging(self.config.logging if self.config is not None else None)
        if autostart:
            embedded.start_in_bot(self)

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | ClusterConfig, instance_id: str,
                    **kwargs: Any) -> "StateManager":
        """Build the manager for ``instance_id`` from a cluster file (or a loaded config).

        Not started: call :meth:`start` (or use ``with``).
        """
        return cls(instance_id, config=config, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, wait_ready: float | None = None) -> "StateManager":
        """Start the Raft node and its HTTP endpoints; a no-op when already started.

        With ``wait_ready`` wait that long for a known leader. A taken http port raises
        ConfigError naming the node and the address before the node starts.
        """
        with self._lifecycle:
            if not self._started:
                self._start()
        if wait_ready:
            self.wait_ready(wait_ready)
        return self

    def _start(self) -> None:
        if self.http_address is not None:   # bound first: a taken port fails before Raft starts
            self.http_server = NodeHTTPServer(
                self, self.http_address, admin_token=self.admin_token,
                config_path=self.config.path if self.config is not None else None)
        try:
            self._start_node()
        except BaseException:
            if self.http_server is not None:
                self.http_server.stop()
                self.http_server = None
            raise
        if self.http_server is not None:
            self.http_server.start()
        self._started = True
        bind_node(self)
        logger.info("state manager started", extra={"instance": self.instance_id,
                                                    "region": self.region,
                                                    "http": self.http_address})

    def _start_node(self) -> None:
        if self.snapshot_settings is not None:
            if self.snapshot_settings.restore_if_empty:
                self._restore_if_empty()
            self.snapshots = SnapshotService(
                self.snapshot_settings, cluster=self.spec.cluster, machine=self.machine,
                is_leader=self.is_leader, term=self.node.term)
        self.node.start()
        if self.snapshots is not None:
            self.snapshots.start()
        self.watcher.start()
        # Health is always checked and told to peers (they pick failover targets with it);
        # handing leadership over on failure starts only with configure_failover().
        self._install_policy(FailoverSettings(1.0, float("inf")), None)
        self.janitor.start()
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
        st = self.node.status()
        return self.node.running and st.leader_address is not None and \
            st.applied_index >= st.commit_index

    def stop(self) -> None:
        """Stop the HTTP endpoints, health checks, leadership callbacks and the Raft node.

        Safe to call more than once (and from the interpreter-exit hook).
        """
        with self._lifecycle:
            if self.http_server is not None:
                self.http_server.stop()
                self.http_server = None
            if self._policy is not None:
                self._policy.stop()
            if self.snapshots is not None:
                self.snapshots.stop()
            self.janitor.stop()
            self.lease_expirer.stop()
            self.watcher.stop()
            self.node.stop()
            self._writes.close()
            self.watch_hub.close()
            if self._started:
                logger.info("state manager stopped", extra={"instance": self.instance_id})
            self._started = False

    def __enter__(self) -> "StateManager":
        return self.start() if not self._started else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- writes -------------------------------------------------------------------------------
    def save_state(self, values: Mapping[str, Any], *, timeout: Duration | None = None,
                   lease: Lease | int | None = None, ttl: Duration | None = None) -> int:
        """Merge ``values`` into the state atomically (one log entry).

        Returns the cluster revision of the write, once it is committed and applied on this
        node. Raises TypeError before proposing when a value cannot be stored,
        OverloadedError (not applied; retry after ``retry_after``) when too many writes
        wait to commit, and WriteError (``outcome_unknown`` says whether it may still
        apply) on timeout. With ``lease`` the keys are attached to it (deleted when it ends;
        LeaseNotFoundError if it has ended); ``ttl=30`` grants a new lease of 30 s for them
        first. Without either, the keys are detached from any lease they had.
        """
        command = self._update(values)
        if ttl is not None:
            if lease is not None:
                raise ValueError("save_state takes lease= or ttl=, not both")
            lease = self.grant_lease(ttl, timeout=timeout)
        if lease is not None:
            return self.transaction((), [txn_mod.put(k, v, lease=lease)
                                         for k, v in values.items()], timeout=timeout).revision
        return self._write(command, timeout)[1]

    def save_state_async(self, values: Mapping[str, Any], *,
                         timeout: Duration | None = None) -> "Future[int]":
        """:meth:`save_state` without waiting: a future of the revision, same errors.

        Pipelining: many writes may be in flight, each applied at most once (exactly once
        when its future succeeds); writes that must apply in order should wait for each
        other. Future callbacks run on the Raft thread: keep them short, never block there.
        """
        return self._submit(self._update(values), timeout, _revision)

    @staticmethod
    def _update(values: Mapping[str, Any]) -> Command:
        encoded = {check_key(k): encode_value(k, v) for k, v in values.items()}
        if not encoded:
            raise ValueError("save_state needs at least one key")
        return Command(op="update", values=encoded)

    def delete(self, *keys: str, timeout: Duration | None = None) -> int:
        """Remove ``keys`` atomically; missing keys are ignored.

        Returns the revision of the delete (the current one when no key existed).
        """
        return self._write(self._delete(keys), timeout)[1]

    def delete_async(self, *keys: str, timeout: Duration | None = None) -> "Future[int]":
        """:meth:`delete` without waiting: a future of the revision."""
        return self._submit(self._delete(keys), timeout, _revision)

    @staticmethod
    def _delete(keys: tuple[str, ...]) -> Command:
        if not keys:
            raise ValueError("delete needs at least one key")
        return Command(op="delete", keys=tuple(check_key(k) for k in keys))

    def compare_and_set(self, key: str, value: Any, expected_revision: int, *,
                        timeout: Duration | None = None) -> int:
        """Set ``key`` only if its mod_revision is ``expected_revision`` (0 = must not exist).

        Returns the new revision; raises ConflictError naming the actual revision otherwise.
        A transaction: ``mod_revision(key) == expected`` then put, else get.
        """
        command, finish = self._cas(key, value, expected_revision)
        return finish(self._write(command, timeout))

    def compare_and_set_async(self, key: str, value: Any, expected_revision: int, *,
                              timeout: Duration | None = None) -> "Future[int]":
        """:meth:`compare_and_set` without waiting: a future of the new revision."""
        command, finish = self._cas(key, value, expected_revision)
        return self._submit(command, timeout, finish)

    def _cas(self, key: str, value: Any,
             expected_revision: int) -> tuple[Command, Callable[[tuple], int]]:
        """The transaction of a compare-and-set, and how its result becomes the revision."""
        expected = int(expected_revision)
        success, failure = [txn_mod.put(key, value)], [txn_mod.get(key)]
        wire = txn_mod.build([txn_mod.mod_revision(check_key(key)) == expected], success,
                             failure, **self.txn_limits)

        def finish(result: tuple) -> int:
            done = txn_mod.to_result(result, success, failure)
            if not done.succeeded:
                found = done.responses[0]
                raise ConflictError(key, expected,
                                    found.mod_revision if found is not None else 0)
            return done.revision
        return Command(op="txn", txn=wire), finish

    def transaction(self, compare: Iterable[Compare] = (), success: Iterable[Op] = (),
                    failure: Iterable[Op] = (), *, timeout: Duration | None = None) -> TxnResult:
        """If every compare holds run ``success``, else ``failure``: one atomic log entry.

        Exactly once under retries, like every write. See :mod:`hastate.state.txn` for the
        compares and ops, e.g.::

            from hastate.state.txn import mod_revision, put, delete, get
            sm.transaction([mod_revision("pos/X") == rev],
                           [delete("pos/X"), put("pnl", pnl), put("model", "v3")],
                           [get("pos/X")])

        :raises TxnError: the transaction is malformed or over a limit (nothing proposed).
        :raises WriteError: not confirmed in time (``outcome_unknown`` says if it may apply).
        """
        success, failure = list(success), list(failure)
        wire = txn_mod.build(compare, success, failure, **self.txn_limits)
        result = self._write(Command(op="txn", txn=wire), timeout)
        if result[0] == "no_lease":
            raise LeaseNotFoundError(result[1])
        if result[0] != "txn":
            raise WriteError(f"transaction refused by the state machine: {result!r}",
                             outcome_unknown=False)
        return txn_mod.to_result(result, success, failure)

    def propose(self, command: Command, timeout: Duration | None = None) -> tuple:
        """Replicate ``command`` and return its apply result: the seam recipes build on.

        The command gets this manager's client id and next sequence number, so retries
        apply it exactly once. Returns the state machine's result tuple once the command is
        committed and applied on this node; raises WriteError (``outcome_unknown`` says
        whether it may still apply) when it is not confirmed within ``timeout`` (default
        ``write_timeout``).
        """
        return self._write(command, timeout)

    @traced_write
    def _write(self, command: Command, timeout: Duration | None) -> tuple:
        """Propose ``command`` and wait; returns the state machine's result tuple."""
        return self._submit(command, timeout, lambda result: result).result()

    def _submit(self, command: Command, timeout: Duration | None,
                finish: Callable[[tuple], Any]) -> Future:
        seconds = optional_duration(timeout, field="timeout")
        return self._writes.submit(command, seconds if seconds is not None
                                   else self.write_timeout, finish)

    def _next_seq(self) -> int:
        with self._seq_lock:
            return next(self._seq)

    # -- leases -------------------------------------------------------------------------------
    def grant_lease(self, ttl: Duration, *, timeout: Duration | None = None) -> Lease:
        """Grant a lease of ``ttl`` seconds: a :class:`~hastate.recipes.lease.Lease` to put
        keys with, keep alive (``keep_alive_in_background()``) and revoke."""
        return Lease.grant(self, parse_duration(ttl, field="ttl", minimum=0.001),
                           optional_duration(timeout, field="timeout"))

    def revoke_lease(self, lease: Lease | int, *, timeout: Duration | None = None) -> bool:
        """End ``lease`` (a Lease or its id) now and delete its keys; True if it existed."""
        return lease_recipe.revoke(self, getattr(lease, "id", lease),
                                   optional_duration(timeout, field="timeout"))

    def leases(self) -> dict[int, LeaseInfo]:
        """This replica's lease table: id -> (ttl, refreshed index, attached keys)."""
        return self.machine.leases()

    def presence(self, ttl: Duration = 10.0, *, model_version: str = "",
                 health: Callable[[], bool] | None = None) -> Presence:
        """Publish this bot's presence under a lease kept alive in the background (started);
        see :mod:`hastate.recipes.presence`."""
        return Presence(self, ttl=parse_duration(ttl, field="ttl"), model_version=model_version,
                        health=health).start()

    def cache(self, namespace: str, ttl: Duration, loader: Callable[[str], Any],
              **kwargs: Any) -> Cache:
        """A read-through cache whose values live ``ttl`` seconds, loaded once per key per
        expiry across the cluster; see :mod:`hastate.recipes.cache`."""
        return Cache(self, namespace, parse_duration(ttl, field="ttl"), loader, **kwargs)

    def members_alive(self, consistency: Consistency = "local") -> dict[str, dict[str, Any]]:
        """instance -> presence entry of every bot whose presence lease is alive."""
        return members_alive(self.get_state(consistency))

    # -- reads --------------------------------------------------------------------------------
    @traced_read
    def get_state(self, consistency: Consistency = "linearizable", *,
                  keys: Iterable[str] | None = None, timeout: Duration | None = None,
                  with_revision: bool = False) -> Any:
        """A copy of the state (or of ``keys``); with ``with_revision``, (state, revision).

        ``linearizable`` (default) reflects every write acknowledged anywhere before the
        call: a leader holding its lease reads locally, any other node first passes a barrier
        through the log. ``local`` reads this replica without a round trip (may be stale).
        The revision is the one the copy was read at: watch from revision + 1 to see every
        later change.
        """
        if consistency == "linearizable":
            self._linearize(timeout)
        elif consistency != "local":
            raise ValueError(f"consistency must be 'linearizable' or 'local', not {consistency!r}")
        state, revision = self.machine.snapshot_at(keys)
        return (state, revision) if with_revision else state

    def _linearize(self, timeout: float | None) -> None:
        """Make this replica reflect every write acknowledged before the call."""
        if not self._lease_read_ok():
            try:
                self._write(Command(op="barrier"), timeout)
            except WriteError as exc:
                raise ReadError(f"linearizable read failed: {exc}") from None

    def _lease_read_ok(self) -> bool:
        return self.node.is_leader() and self.node.caught_up_in_term()

    def revisions(self) -> dict[str, int]:
        """mod_revision of every key on this replica (for compare_and_set)."""
        return self.machine.revisions()

    def revision(self) -> int:
        """The cluster revision this replica applied (writes that changed something)."""
        return self.machine.revision

    # -- watch --------------------------------------------------------------------------------
    def watch(self, prefix: str = "", start_revision: int | None = None, *,
              prev_value: bool = False, progress_notify: float | None = None,
              linearizable: bool = False, buffer: int | None = None,
              callback: Callable[[WatchEvent], Any] | None = None,
              on_error: Callable[[Exception], Any] | None = None,
              timeout: float | None = None) -> Watcher:
        """Watch keys starting with ``prefix`` from ``start_revision`` (None: from now).

        Events come from this replica, in revision order, no gap and no duplicate; see
        :mod:`hastate.state.watch`. ``progress_notify``: seconds of quiet after which a
        ``progress`` event says every later event is newer than its revision.
        ``linearizable``: with no ``start_revision``, start after every write acknowledged
        before the call (a barrier first). With ``callback``, events are delivered on a
        thread of their own (``on_error`` gets the error that ends the watch).

        :raises CompactedError: ``start_revision`` is older than this node holds.
        """
        if linearizable and start_revision is None:
            self._linearize(timeout)
        watcher = self.watch_hub.watch(prefix, start_revision, prev_value=prev_value,
                                       progress_interval=progress_notify, buffer=buffer)
        if callback is not None:
            run_callback(watcher, callback, on_error)
        return watcher

    @functools.cached_property
    def events(self) -> EventStreams:
        """Event streams (namespace ``events``) on this manager: see :mod:`hastate.events`."""
        return EventStreams(ManagerBackend(self))

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
        """A :class:`~hastate.recipes.lock.Lock` named ``name`` on this manager.

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

    def configure_failover(self, health_check_interval: Duration = 5.0,
                           failover_timeout: Duration = 15.0,
                           recovery_callback: Callable[[dict[str, Any]], None] | None = None,
                           health_check: HealthCheck | None = None) -> None:
        """Enable health-driven failover and a recovery hook for new leaders.

        ``recovery_callback(state)`` runs each time this node becomes leader, and right
        away when it already leads.

        Durations are seconds or strings such as ``"500ms"``, ``"30s"``, ``"5m"``.
        """
        interval = parse_duration(health_check_interval, field="health_check_interval",
                                  minimum=0.001)
        timeout = parse_duration(failover_timeout, field="failover_timeout")
        self._recovery = recovery_callback
        self._install_policy(FailoverSettings(interval, timeout), health_check)
        if recovery_callback is not None:   # already leading (started at construction)
            self.watcher.when_leading(lambda token: self._on_transition(True, token))

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
        self.node.publish_health(ok, self.machine.applied_index)

    def _pick_failover_target(self) -> str | None:
        st = self.node.status()
        fresh = time.monotonic() - 3 * self._policy.settings.health_check_interval
        candidates = [(st.match_index.get(addr, 0), self.node.id_of(addr))
                      for addr, (ok, _applied, when) in st.peer_health.items()
                      if ok and when >= fresh and addr in st.connected]
        return max(candidates)[1] if candidates else None

    @traced_failover
    def trigger_failover(self, target_instance: str | None = None, *,
                         timeout: Duration | None = None, reason: str = "manual") -> float:
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
                match = self.node.status().match_index
                if not match:
                    raise NotLeaderError("no peer to hand leadership to")
                target_instance = self.node.id_of(max(match, key=match.get))
        seconds = self.node.transfer_leadership(
            target_instance, optional_duration(timeout, field="timeout"))
        self.failovers_total[reason] = self.failovers_total.get(reason, 0) + 1
        return seconds

    # -- membership ---------------------------------------------------------------------------
    def members(self) -> list[Member]:
        """The voters in this node's configuration (committed or about to be), sorted by id."""
        return self.node.members()

    @traced_add_member
    def add_member(self, member: Member, *, timeout: Duration | None = None) -> int:
        """Leader: add a voter; returns the commit index once the change is committed.

        Start the new node first (``hastate node run --join``): the change is refused if
        the members reachable now would not be a majority of the new configuration.
        """
        return self.node.change_membership(
            "add", member, optional_duration(timeout, field="timeout") or self.write_timeout)

    @traced_remove_member
    def remove_member(self, instance_id: str, *, timeout: Duration | None = None) -> int:
        """Leader: remove a voter (not the leader itself: move leadership first)."""
        return self.node.change_membership(
            "remove", instance_id,
            optional_duration(timeout, field="timeout") or self.write_timeout)

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What operators ask first: who leads, how far each node got, who is connected."""
        st = self.node.status()
        now = time.monotonic()
        leading = st.is_leader
        match = st.match_index if st.role == "leader" else {}
        contact = st.last_contact if st.role == "leader" else {}
        connected = st.connected
        peers = {}
        last_index = st.last_log_index
        members = st.members
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
            "role": st.role if st.role != "leader" or leading else "leader-without-lease",
            "is_leader": leading,
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
            **self._writes.status(),
            "keys": len(self.machine),
            "revision": self.machine.revision,
            "watchers": len(self.watch_hub),
            "leases": self.machine.lease_count(),
            "lease_expiries": self.lease_expirer.applied_expiries,
            "leader_changes": st.leader_changes,
            "healthy": self._health_ok,
            "health_check_failures": self.health_check_failures,
            "failovers": dict(self.failovers_total),
            "profile": self.spec.profile.name,
            "ready": self.ready(),
            "fatal_error": st.fatal_error,
            "snapshots": self.snapshots.status() if self.snapshots is not None else None,
            "member": st.is_member,
            "members": [m.to_dict() for m in members],
            "peers": peers,
        }
