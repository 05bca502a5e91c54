"""The etcd engine: hastate's state, leadership and leases on an existing etcd cluster.

Writes become one etcd Txn each (:mod:`~hastate.engines.etcd.commands`), exactly once under
retries through a marker written in the same Txn; the caller's answer waits until the local
mirror (:mod:`~hastate.engines.etcd.mirror`) holds the write, so a bot reads its own writes
locally, as on the Raft engine. Linearizable reads are quorum ranges served by etcd; local
reads, records, revisions and watches come from the mirror. Revisions are etcd's: strictly
increasing but not contiguous (other writers of the etcd cluster, hastate's own markers and
sessions use them too). Leadership is :mod:`~hastate.engines.etcd.election`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Literal, TypeVar

from hastate.consensus.membership import Member
from hastate.engines import Options
from hastate.engines.contract import Consistency
from hastate.engines.etcd import commands
from hastate.engines.etcd.client import EtcdClient, b64, header_revision, range_end, unb64
from hastate.engines.etcd.election import Election
from hastate.engines.etcd.keys import Layout
from hastate.engines.etcd.leases import LeaseOps
from hastate.engines.etcd.mirror import Mirror
from hastate.engines.etcd.settings import EtcdSettings
from hastate.engines.etcd.watch import EtcdWatch, feed_hub
from hastate.errors import (CompactedError, NotSupportedError, ReadError, StoreRefusedError,
                            StoreUnreachableError, WriteError)
from hastate.state.codec import Command, decode_value
from hastate.state.export import StateExport
from hastate.state.leases import LeaseInfo
from hastate.state.machine import ChangeListener
from hastate.state.txn import Record
from hastate.state.watch import Watcher, WatchHub

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: TTL of the lease the exactly-once markers hang on: far longer than any write's retries.
DEDUP_TTL = 600
#: How often the housekeeping thread checks the mirror is not stalled.
HOUSEKEEPING_INTERVAL = 2.0
#: A state read in one Txn of ranges at most this many keys; more: one range of the prefix.
MAX_KEYS_PER_READ = 64


class EtcdEngine:
    """One bot instance's handle on the cluster's prefix in etcd (see the module docstring)."""

    name = "etcd"

    def __init__(self, settings: EtcdSettings, instance_id: str, members: list[Member],
                 options: Options) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self._members = members
        self.options = options
        self.client = EtcdClient(settings)
        self.layout = Layout(settings.prefix)
        self.hub = WatchHub(options.watch_history, options.watch_buffer)
        me = next((m for m in members if m.id == instance_id), None)
        self.mirror = Mirror(self.client, self.layout, self.hub, on_change=self._poke)
        self.election = Election(self.client, self.layout, self.mirror, instance_id,
                                 settings.session_ttl,
                                 {"region": me.region if me else "",
                                  "http": me.http if me else None})
        self.lease_ops = LeaseOps(self.client, self.layout, self.mirror)
        self.client_id = uuid.uuid4().bytes
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self.dedup_lease = 0
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hastate-etcd-write")
        self._direct: list[tuple[EtcdWatch, WatchHub]] = []
        self._stop = threading.Event()
        self._started = False
        self._housekeeper = threading.Thread(target=self._housekeeping, daemon=True,
                                             name=f"hastate-etcd-housekeeping-{instance_id}")
        self.writes_total = 0
        self.retries_total = 0
        self.replays_total = 0          # writes found applied by a retry (answer lost)

    def _poke(self) -> None:
        if self._started:
            self.election.poke()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        try:
            if self.settings.discover_members:
                self.client.discover()
        except (StoreUnreachableError, StoreRefusedError) as exc:
            logger.warning("etcd member list unavailable; using the configured endpoints",
                           extra={"reason": str(exc)})
        self.dedup_lease = self.lease_ops.grant(DEDUP_TTL)
        self.mirror.start()
        self.election.start()
        self._started = True
        self.election.poke()
        self._housekeeper.start()
        logger.info("etcd engine started", extra={"instance": self.instance_id,
                                                  "prefix": self.settings.prefix,
                                                  "endpoints": self.client.endpoints})

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._started:
            self.election.stop()
        self._pool.shutdown(wait=False)      # queued writes end with WriteError at once
        self.mirror.stop()
        for watch, hub in self._direct:
            watch.stop()
            hub.close()
        self.hub.close()
        if self._housekeeper.is_alive():
            self._housekeeper.join(5)
        self.client.close()

    @property
    def running(self) -> bool:
        return self._started and not self._stop.is_set()

    def ready(self) -> bool:
        return self.running and self.mirror.loaded and self.mirror.leader is not None

    def healthy(self) -> bool:
        """Running, and the session was renewed within its TTL (etcd answers)."""
        return self.running and self.election.remaining() > 0

    def fatal_error(self) -> str | None:
        """Why the engine gave up (the mirror could not be reloaded), None while it runs."""
        return self.mirror.fatal

    def log_context(self) -> dict[str, Any]:
        leader = self.mirror.leader
        return {"term": leader.create_revision if leader is not None else None,
                "role": "leader" if self.is_leader() else "follower"}

    def _housekeeping(self) -> None:
        """Reopen a stalled mirror watch; keep the dedup lease; drop finished direct watches."""
        due: int | None = None      # committed a tick ago: the mirror must have it by now
        last_dedup = time.monotonic()
        while not self._stop.wait(HOUSEKEEPING_INTERVAL):
            try:
                newest = self._newest_revision()
                if due is not None and self.mirror.revision < due:
                    self.mirror.restart_watch()
                due = newest if self.mirror.revision < newest else None
                if time.monotonic() - last_dedup > DEDUP_TTL / 10:
                    self._keep_dedup_lease()
                    last_dedup = time.monotonic()
            except (StoreUnreachableError, StoreRefusedError) as exc:
                logger.info("etcd housekeeping step failed", extra={"reason": str(exc)})
            for watch, hub in list(self._direct):
                if len(hub) == 0:
                    watch.stop()
                    self._direct.remove((watch, hub))

    def _newest_revision(self) -> int:
        """The newest mod revision under the prefix (a quorum read)."""
        answer = self.client.call("/v3/kv/range", {
            "key": b64(self.layout.prefix), "range_end": b64(range_end(self.layout.prefix)),
            "sort_order": "DESCEND", "sort_target": "MOD", "limit": "1", "keys_only": True})
        kvs = answer.get("kvs") or []
        return int(kvs[0]["mod_revision"]) if kvs else 0

    def _keep_dedup_lease(self) -> None:
        answer = self.client.call("/v3/lease/keepalive", {"ID": str(self.dedup_lease)})
        if int(answer.get("result", answer).get("TTL", 0)) <= 0:
            self.dedup_lease = self.lease_ops.grant(DEDUP_TTL)

    # -- writes -------------------------------------------------------------------------
    def next_seq(self) -> int:
        with self._seq_lock:
            return next(self._seq)

    def submit(self, command: Command, timeout: float,
               finish: Callable[[tuple], T]) -> "Future[T]":
        seq = self.next_seq()
        deadline = time.monotonic() + timeout
        if command.op in Command.LOCK_OPS or command.op == "lease_expire":
            future: Future[T] = Future()
            future.set_exception(NotSupportedError(
                "etcd", f"the {command.op!r} command",
                "locks run on transactions and leases, and etcd expires leases itself"))
            return future
        try:
            return self._pool.submit(self._timed, command, seq, deadline, finish)
        except RuntimeError:                # the engine stopped
            future = Future()
            future.set_exception(WriteError("the etcd engine is stopped",
                                            outcome_unknown=False))
            return future

    def _timed(self, command: Command, seq: int, deadline: float,
               finish: Callable[[tuple], T]) -> T:
        started = time.monotonic()
        outcome = "error"
        try:
            result = self._execute(command, seq, deadline)
            outcome = "conflict" if result[0] == "conflict" or \
                (result[0] == "txn" and not result[1]) else "ok"
            return finish(result)
        except WriteError as exc:
            outcome = "timeout" if exc.outcome_unknown else "error"
            raise
        finally:
            for observe in self.options.observers:
                try:
                    observe(command.op, time.monotonic() - started, outcome)
                except Exception:
                    logger.exception("write observer failed")

    def _execute(self, command: Command, seq: int, deadline: float) -> tuple:
        """Run ``command`` until it is known applied (or refused), or ``deadline`` passes."""
        attempted = False
        last: Exception | None = None
        overrides: dict[str, Record | None] = {}
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                attempted = True
                result, revision = self._attempt(command, seq, overrides,
                                                 min(remaining, self.settings.request_timeout))
            except StoreUnreachableError as exc:
                last = exc
                self.retries_total += 1
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            except StoreRefusedError as exc:
                if exc.code == 5 and "lease" in exc.store_message:
                    if not self.lease_ops.alive(self.dedup_lease):   # paused past its TTL
                        self.dedup_lease = self.lease_ops.grant(DEDUP_TTL)
                        continue
                    return ("no_lease", self.lease_ops.missing(command))
                raise WriteError(f"etcd refused the write: {exc}", outcome_unknown=False) from None
            if result is None:              # a value guard moved: plan again
                continue
            self.writes_total += 1
            if revision and not self.mirror.wait_revision(
                    revision, max(0.5, deadline - time.monotonic())):
                self.mirror.restart_watch()
            return result
        raise WriteError(f"the write was not confirmed by etcd in time ({last})",
                         outcome_unknown=attempted)

    def _attempt(self, command: Command, seq: int, overrides: dict[str, Record | None],
                 timeout: float) -> tuple[tuple | None, int]:
        """One try: (result or None to plan again, revision to wait for locally)."""
        marker = self.layout.dedup(self.client_id, seq)
        if command.op in Command.LEASE_OPS:
            return self.lease_ops.execute(command, marker, self.dedup_lease, timeout)
        if command.op == "barrier":         # a quorum read: its revision covers every ack
            revision = header_revision(self.client.call("/v3/kv/range", {
                "key": b64(self.layout.leader), "count_only": True}, timeout))
            return ("ok", revision, revision), 0

        def record_of(key: str) -> Record | None:
            return overrides[key] if key in overrides else self.mirror.record(key)
        try:
            plan = commands.plan(command, self.layout, marker, self.dedup_lease, record_of)
        except ValueError as exc:
            return ("invalid", str(exc)), 0
        answer = self.client.call("/v3/kv/txn", plan.body, timeout=timeout)
        result = commands.answer(plan, self.layout, answer)
        if result is not None:
            return result, header_revision(answer)
        revision = commands.marker_revision(answer)
        if revision:                        # applied before; the answer was lost
            self.replays_total += 1
            return self._replay(plan, revision), revision
        for key, found in zip(plan.guards, (answer.get("responses") or [])[1:]):
            kvs = found.get("response_range", {}).get("kvs") or []
            overrides[key] = commands.kv_record(kvs[0]) if kvs else None
        return None, 0

    def _replay(self, plan: commands.Plan, revision: int) -> tuple:
        """The result of ``plan`` that committed at ``revision`` (its answer was lost)."""
        if plan.op in ("update", "delete"):
            return ("ok", revision, revision)
        keys, prefixes = commands.touched(plan)
        data: dict[str, Record] = {}
        for key in keys:
            data.update(self._range_at(self.layout.user(key), None, revision - 1))
        for prefix in prefixes:
            data.update(self._range_at(*self.layout.user_range(prefix), revision - 1))
        return commands.replay(plan, revision, data)

    def _range_at(self, key: bytes, end: bytes | None, revision: int) -> dict[str, Record]:
        body: dict[str, Any] = {"key": b64(key), "revision": str(revision)}
        if end is not None:
            body["range_end"] = b64(end)
        answer = self.client.call("/v3/kv/range", body)
        return {self.layout.state_key(unb64(kv["key"])) or "": commands.kv_record(kv)
                for kv in answer.get("kvs") or []}

    def export(self, timeout: float | None) -> StateExport:
        """Every state key and every hastate lease with its keys, read by etcd's quorum at
        one revision (a ``hastate.state.export.StateExport``, for DR snapshots)."""

        deadline = time.monotonic() + (timeout if timeout is not None
                                       else self.options.write_timeout)
        ranges = [self.layout.user_range(""), (self.layout.leases,
                                                range_end(self.layout.leases))]
        body = {"success": [{"request_range": {"key": b64(start), "range_end": b64(end)}}
                            for start, end in ranges]}
        while True:
            try:
                answer = self.client.call("/v3/kv/txn", body,
                                          max(0.05, deadline - time.monotonic()))
                break
            except StoreUnreachableError as exc:
                if time.monotonic() >= deadline:
                    raise ReadError(f"etcd export failed: {exc}") from None
                time.sleep(0.05)
        found = [r.get("response_range", {}).get("kvs") or [] for r in answer["responses"]]
        records, keys_of = {}, {}
        for kv in found[0]:
            key = self.layout.state_key(unb64(kv["key"])) or ""
            records[key] = commands.kv_record(kv)
            if int(kv.get("lease", 0)):
                keys_of.setdefault(int(kv["lease"]), set()).add(key)
        leases = {}
        for kv in found[1]:
            lease = int(unb64(kv["key"])[len(self.layout.leases):])
            leases[lease] = (float(unb64(kv.get("value")).decode()),
                             frozenset(keys_of.get(lease, ())))
        return StateExport(header_revision(answer), records, leases)

    # -- leases -------------------------------------------------------------------------
    def leases(self) -> dict[int, LeaseInfo]:
        return self.mirror.leases()

    def has_lease(self, lease_id: int) -> bool:
        return self.mirror.has_lease(lease_id)

    def lease_expiry(self) -> dict[int, float]:
        """{}: etcd's leader expires leases on its own clock, which this instance cannot read."""
        return {}

    # -- reads --------------------------------------------------------------------------
    def read(self, keys: Iterable[str] | None, consistency: Consistency,
             timeout: float | None) -> tuple[dict[str, Any], int]:
        if consistency == "local":
            return self.mirror.snapshot(keys)
        if consistency != "linearizable":
            raise ValueError(f"consistency must be 'linearizable' or 'local', not {consistency!r}")
        wanted = None if keys is None else list(keys)
        deadline = time.monotonic() + (timeout if timeout is not None
                                       else self.options.write_timeout)
        last: Exception | None = None
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                return self._quorum_read(wanted, max(0.05, deadline - time.monotonic()))
            except StoreUnreachableError as exc:
                last = exc
                time.sleep(0.05)
        raise ReadError(f"linearizable read failed: {last or 'the engine is stopped'}")

    def _quorum_read(self, keys: list[str] | None, timeout: float) -> tuple[dict[str, Any], int]:
        """Values read by etcd's quorum at one revision, and that revision."""
        seconds = min(timeout, self.settings.request_timeout)
        if keys is not None and len(keys) <= MAX_KEYS_PER_READ:
            answer = self.client.call("/v3/kv/txn", {"success": [
                {"request_range": {"key": b64(self.layout.user(k))}} for k in keys]}, seconds)
            kvs = [kv for r in answer.get("responses") or []
                   for kv in r.get("response_range", {}).get("kvs") or []]
        else:
            start, end = self.layout.user_range("")
            answer = self.client.call("/v3/kv/range", {"key": b64(start), "range_end": b64(end)},
                                      seconds)
            kvs = answer.get("kvs") or []
        out = {}
        for kv in kvs:
            key = self.layout.state_key(unb64(kv["key"]))
            if key is not None and (keys is None or key in keys):
                out[key] = decode_value(unb64(kv.get("value")))
        return out, header_revision(answer)

    def records(self, keys: Iterable[str]) -> dict[str, Record]:
        return self.mirror.records(keys)

    def scan(self, prefix: str) -> tuple[list[tuple[str, Record]], int]:
        return self.mirror.scan(prefix)

    def add_change_listener(self, listener: ChangeListener) -> None:
        self.mirror.add_change_listener(listener)

    def revisions(self) -> dict[str, int]:
        return self.mirror.revisions()

    def revision(self) -> int:
        return self.mirror.revision

    def key_count(self) -> int:
        return len(self.mirror.data)

    def state_hash(self) -> str:
        """SHA-256 over the mirror's sorted state keys and records (equal when in sync)."""
        digest = hashlib.sha256()
        with self.mirror._cond:
            for key in sorted(self.mirror.data):
                value, mod, create, version = self.mirror.data[key]
                digest.update(key.encode())
                for number in (mod, create, version):
                    digest.update(number.to_bytes(8, "big"))
                digest.update(value)
        return digest.hexdigest()

    # -- watch --------------------------------------------------------------------------
    def watch(self, prefix: str, start_revision: int | None, *, prev_value: bool,
              progress_interval: float | None, buffer: int | None) -> Watcher:
        try:
            return self.hub.watch(prefix, start_revision, prev_value=prev_value,
                                  progress_interval=progress_interval, buffer=buffer)
        except CompactedError:
            if start_revision is None:
                raise
        return self._direct_watch(prefix, start_revision, prev_value=prev_value,
                                  progress_interval=progress_interval, buffer=buffer)

    def _direct_watch(self, prefix: str, start_revision: int, *, prev_value: bool,
                      progress_interval: float | None, buffer: int | None) -> Watcher:
        """A watch older than the mirror's history, served by etcd from ``start_revision``."""
        hub = WatchHub(self.options.watch_history, self.options.watch_buffer)
        watcher = hub.watch(prefix, start_revision, prev_value=prev_value,
                            progress_interval=progress_interval, buffer=buffer)
        stream = feed_hub(self.client, self.layout, prefix, start_revision, hub)
        self._direct.append((stream, hub))
        return watcher

    def watchers(self) -> int:
        return len(self.hub) + sum(len(hub) for _, hub in self._direct)

    # -- leadership ---------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.election.is_leader()

    def fencing_token(self) -> int | None:
        return self.election.fencing_token()

    def leader(self) -> str | None:
        return self.election.leader()

    def transfer(self, target: str, timeout: float | None) -> float:
        return self.election.transfer(target, timeout if timeout is not None
                                      else 2 * self.settings.session_ttl + 5.0)

    def failover_candidates(self, fresh_after: float | None) -> list[tuple[int, str]]:
        return self.election.candidates(healthy_only=fresh_after is not None)

    def publish_health(self, ok: bool) -> None:
        self.election.publish_health(ok)

    # -- membership and status ----------------------------------------------------------
    def members(self) -> list[Member]:
        return sorted(self._members, key=lambda m: m.id)

    def change_membership(self, action: Literal["add", "remove"], member: Member | str,
                          timeout: float) -> int:
        raise NotSupportedError("etcd", f"{action} member",
                                "the bot instances are the cluster file's [[nodes]]; etcd's own "
                                "members are managed with etcdctl member add/remove")

    def status(self) -> dict[str, Any]:
        leading = self.is_leader()
        entries = self.mirror.member_entries()
        leader, watch = self.mirror.leader, self.mirror.watch
        return {
            "role": "leader" if leading else "follower",
            "is_leader": leading,
            "leader": self.leader(),
            "fencing_token": self.fencing_token(),
            "term": leader.create_revision if leader is not None else 0,
            "lease_remaining": round(self.election.remaining(), 3),
            "session_lease": self.election.session,
            "leader_changes": self.election.leader_changes,
            "etcd": {"endpoints": list(self.client.endpoints), "prefix": self.settings.prefix,
                     "mirror_revision": self.mirror.revision,
                     "watch_endpoint": watch.endpoint if watch is not None else None,
                     "watch_reconnects": watch.reconnects if watch is not None else 0,
                     "writes": self.writes_total, "retries": self.retries_total,
                     "replays": self.replays_total},
            "members": [{**m.to_dict(), "live": m.id in entries,
                         "healthy": bool(entries.get(m.id, {}).get("health"))}
                        for m in self.members()],
        }
