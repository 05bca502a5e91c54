"""StateManager: the bot's front door to the replicated state.

A write becomes one msgpack command with this manager's client id and a sequence number;
it is retried with the same id until it is applied or the timeout ends, and the state
machine applies each (client, seq) once, so a retry never applies a write twice.

Length: the whole public API of an embedded replica (writes, reads, leadership, failover,
membership, status); each method is a thin delegate to the module that does the work.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Mapping

from hastate import embedded
from hastate.addresses import check_transport_mode
from hastate.config import ClusterConfig, SnapshotConfig
from hastate.consensus.backpressure import Limits
from hastate.consensus.membership import Member
from hastate.consensus.profiles import get_profile
from hastate.consensus.transport import TransportSecurity
from hastate.durations import Duration, optional_duration, parse_duration
from hastate import engines
from hastate.engines import raft as raft_engine
from hastate.engines.contract import Consistency, Engine
from hastate.errors import (ConfigError, ConflictError, LeaseNotFoundError, NoQuorumError,
                            NotLeaderError, NotSupportedError, WriteError)
from hastate.recipes import lease as lease_recipe
from hastate.recipes.cache import Cache
from hastate.recipes.lease import Lease
from hastate.recipes.presence import Presence, members_alive
from hastate.events import EventStreams, ManagerBackend
from hastate.events.index import EventIndex
from hastate.recipes.lock import Lock
from hastate.failover.policy import FailoverPolicy, FailoverSettings, HealthCheck
from hastate.failover.watcher import BecomeLeader, LeaderWatcher, LoseLeadership
from hastate.observability.operations import (traced_add_member, traced_failover,
                                              traced_read, traced_remove_member,
                                              traced_write)
from hastate.observability.logs import bind_node, configure_logging
from hastate.server.http import NodeHTTPServer
from hastate.state import txn as txn_mod
from hastate.state.codec import Command, check_key, encode_value
from hastate.state.history import DEFAULT_HISTORY
from hastate.state.leases import LeaseInfo
from hastate.state.txn import Compare, Op, TxnResult
from hastate.state.watch import DEFAULT_BUFFER, WatchEvent, Watcher, run_callback

logger = logging.getLogger(__name__)


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
        peers = wiring.peers
        self.config = wiring.config
        self.instance_id = instance_id
        self.region = wiring.region
        self.write_timeout = parse_duration(write_timeout, field="write_timeout", minimum=0.001)
        self.cluster = wiring.cluster_name
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
        self._health_ok = True
        # observe(op, seconds, outcome); outcome: ok, conflict, no_quorum, timeout,
        # overloaded, error.
        self.proposal_observers: list[Callable[[str, float, str], None]] = []
        options = engines.Options(write_timeout=self.write_timeout, watch_history=watch_history,
                                  watch_buffer=watch_buffer, observers=self.proposal_observers)
        if self.config is not None and self.config.engine != "raft":
            self.engine: Engine = engines.open_engine(self.config, instance_id, options)
        else:
            try:
                timing = get_profile(wiring.profile)
            except KeyError as exc:
                raise ConfigError(str(exc.args[0]), field="profile",
                                  value=wiring.profile) from None
            check_transport_mode(wiring.transport.mode, peers.values())
            self.engine = raft_engine.build(
                instance_id, dict(peers), cluster=wiring.cluster_name,
                data_dir=wiring.data_dir, profile=timing, transport=wiring.transport,
                snapshots=wiring.snapshots, members=wiring.members, join=join,
                limits=limits if limits is not None else
                self.config.limits if self.config is not None else Limits(),
                log_compaction_entries=log_compaction_entries, options=options)
        # Event positions in global order, derived from the changes this replica applies
        # (fed after the engine's watch hub: see hastate.events.index).
        self.event_index = EventIndex(self.engine.scan, self.engine.revision())
        self.engine.add_change_listener(self.event_index)
        self._recovery: Callable[[dict[str, Any]], None] | None = None
        self._policy: FailoverPolicy | None = None
        self.watcher = LeaderWatcher(self.engine.is_leader, self.engine.fencing_token,
                                     on_transition=self._on_transition)
        self.failovers_total = {"manual": 0, "health": 0}   # completed transfers started here
        self.health_check_failures = 0
        self.http_address = wiring.http if serve_http else None
        self.admin_token = wiring.admin_token
        self.http_server: NodeHTTPServer | None = None
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
        self.engine.start()
        self.watcher.start()
        # Health is always checked and told to peers (they pick failover targets with it);
        # handing leadership over on failure starts only with configure_failover().
        self._install_policy(FailoverSettings(1.0, float("inf")), None)

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
        return self.engine.ready()

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
            self.watcher.stop()
            self.engine.stop()
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
        return self.engine.submit(command, seconds if seconds is not None
                                  else self.write_timeout, finish)

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
        return self.engine.leases()

    def has_lease(self, lease_id: int) -> bool:
        """Whether lease ``lease_id`` is alive on this replica."""
        return self.engine.has_lease(lease_id)

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
        if consistency not in ("linearizable", "local"):
            raise ValueError(f"consistency must be 'linearizable' or 'local', not {consistency!r}")
        state, revision = self.engine.read(
            None if keys is None else list(keys), consistency,
            optional_duration(timeout, field="timeout"))
        return (state, revision) if with_revision else state

    def records(self, keys: Iterable[str]) -> dict[str, tuple]:
        """This replica's (encoded value, mod_revision, create_revision, version) of each
        present key in ``keys``: the revisions an optimistic transaction compares against."""
        return self.engine.records(keys)

    def revisions(self) -> dict[str, int]:
        """mod_revision of every key on this replica (for compare_and_set)."""
        return self.engine.revisions()

    def revision(self) -> int:
        """The cluster revision this replica applied (writes that changed something)."""
        return self.engine.revision()

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
            _, seen = self.engine.read((), "linearizable",
                                       optional_duration(timeout, field="timeout"))
            start_revision = seen + 1
        watcher = self.engine.watch(prefix, start_revision, prev_value=prev_value,
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
        return self.engine.is_leader()

    def fencing_token(self) -> int | None:
        """A number that grows with every leadership change; None when not leading."""
        return self.engine.fencing_token()

    def leader(self) -> str | None:
        """Instance id of the last known leader."""
        return self.engine.leader()

    def watch_leader(self, on_become_leader: BecomeLeader | None = None,
                     on_lose_leadership: LoseLeadership | None = None) -> None:
        """Call ``on_become_leader([fencing_token])`` / ``on_lose_leadership()`` on transitions.

        Callbacks run on hastate's watcher thread, once per transition, never on Raft's.
        """
        self.watcher.subscribe(on_become_leader, on_lose_leadership)

    def lock(self, name: str, ttl: float = 10.0, **kwargs: Any) -> Lock:
        """A :class:`~hastate.recipes.lock.Lock` named ``name`` on this manager.

        The same as ``Lock(self, name, ttl, **kwargs)`` (kazoo's ``partial(Lock, self)``):
        a key created if absent under a lease; its fencing token is the key's create
        revision (strictly increasing). Example::

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
        check = check or self.engine.healthy
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
        self.engine.publish_health(ok)

    def _pick_failover_target(self) -> str | None:
        fresh = time.monotonic() - 3 * self._policy.settings.health_check_interval
        candidates = self.engine.failover_candidates(fresh)
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
                candidates = self.engine.failover_candidates(None)
                if not candidates:
                    raise NotLeaderError("no peer to hand leadership to")
                target_instance = max(candidates)[1]
        seconds = self.engine.transfer(target_instance,
                                       optional_duration(timeout, field="timeout"))
        self.failovers_total[reason] = self.failovers_total.get(reason, 0) + 1
        return seconds

    # -- membership ---------------------------------------------------------------------------
    def members(self) -> list[Member]:
        """The voters in this node's configuration (committed or about to be), sorted by id."""
        return self.engine.members()

    @traced_add_member
    def add_member(self, member: Member, *, timeout: Duration | None = None) -> int:
        """Leader: add a voter; returns the commit index once the change is committed.

        Start the new node first (``hastate node run --join``): the change is refused if
        the members reachable now would not be a majority of the new configuration.
        """
        return self.engine.change_membership(
            "add", member, optional_duration(timeout, field="timeout") or self.write_timeout)

    @traced_remove_member
    def remove_member(self, instance_id: str, *, timeout: Duration | None = None) -> int:
        """Leader: remove a voter (not the leader itself: move leadership first)."""
        return self.engine.change_membership(
            "remove", instance_id,
            optional_duration(timeout, field="timeout") or self.write_timeout)

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What operators ask first: who leads, how far each node got, who is connected."""
        return {
            "id": self.instance_id,
            "region": self.region,
            "cluster": self.cluster,
            "engine": self.engine.name,
            **self.engine.status(),
            "keys": self.engine.key_count(),
            "revision": self.engine.revision(),
            "watchers": self.engine.watchers(),
            "leases": len(self.engine.leases()),
            "healthy": self._health_ok,
            "health_check_failures": self.health_check_failures,
            "failovers": dict(self.failovers_total),
            "ready": self.ready(),
        }

    # -- the embedded Raft engine's parts (tests, benchmarks and its operators' tools) -----
    def _raft(self) -> raft_engine.RaftEngine:
        if not isinstance(self.engine, raft_engine.RaftEngine):
            raise NotSupportedError(self.engine.name, "Raft internals",
                                    "this manager does not run the embedded Raft engine")
        return self.engine

    @property
    def node(self) -> Any:
        """The embedded engine's :class:`~hastate.consensus.node.RaftNode`."""
        return self._raft().node

    @property
    def machine(self) -> Any:
        """The embedded engine's replica (:class:`~hastate.state.machine.ReplicatedState`)."""
        return self._raft().machine

    @property
    def spec(self) -> Any:
        """The embedded engine's :class:`~hastate.consensus.node.NodeSpec`."""
        return self._raft().spec
