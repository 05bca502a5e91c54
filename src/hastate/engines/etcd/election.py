"""Leadership on etcd: one leader key, held on this instance's session lease.

* **Session**: a lease of ``ttl`` seconds kept alive every ``ttl / 3``. Its *deadline* is the
  monotonic time just before the last successful keep-alive (or the grant) was sent, plus
  the TTL, minus a margin: etcd cannot expire the lease before it (etcd counts from when it
  received the request, later; a new etcd leader extends leases).
* **Campaign**: create ``<prefix>_leader`` = this instance's id on the session lease, only
  when absent (``create_revision == 0``). The fencing token is the key's create revision,
  so it grows with every new holder.
* **is_leader()**: this instance created the key, has not seen it deleted or replaced, is
  not handing over, and the local monotonic clock is before the session deadline.
* **Handover** (``trigger_failover(target)``): the leader stops acting first, then in one Txn
  deletes its key and writes ``<prefix>_handover`` = target on the *target's* session lease
  (published in ``<prefix>_members/<id>``). While a handover key exists only its target
  campaigns; it creates the leader key and deletes the handover key in one Txn. If the
  target dies its lease takes the handover key away and anyone may campaign again. A
  handover written by another instance makes the leader step down the same way.
* **Members**: each instance publishes its health, region, http address and session lease;
  failover candidates are the live entries that report healthy. An unhealthy instance does
  not campaign and declines (deletes) a handover naming it, as an unhealthy Raft follower
  neither stands for election nor accepts a transfer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from hastate.engines.etcd.client import EtcdClient, b64, header_revision, unb64
from hastate.engines.etcd.keys import Layout
from hastate.engines.etcd.mirror import Mirror
from hastate.errors import FailoverError, HAStateError, StoreRefusedError

logger = logging.getLogger(__name__)


def margin(ttl: float) -> float:
    """How long before etcd could expire the session this instance stops leading: room for
    clock rate differences and for the time the keep-alive answer takes to come back."""
    return max(0.5, 0.15 * ttl)


class Election:
    """This instance's session and its part in leadership (see the module docstring)."""

    def __init__(self, client: EtcdClient, layout: Layout, mirror: Mirror, instance_id: str,
                 ttl: float, entry: dict[str, Any], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.layout = layout
        self.mirror = mirror
        self.instance_id = instance_id
        self.ttl = ttl
        self.entry = dict(entry)          # region, http: published with health and lease
        self.clock = clock
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.session = 0
        self.deadline = 0.0
        self.token: int | None = None     # create revision of the leader key we hold
        self.stepping_down = False
        self._handing_over = False        # transfer() is writing the handover Txn
        self.health = True
        self.leader_changes = 0
        self._since = 0.0                 # monotonic time just before the winning campaign
        #: observer(token, since, until, final): this instance may act as leader within
        #: [since, until) under ``token``; called when it wins, each time the deadline moves,
        #: and once with ``final`` when it stops acting before the deadline (steps down).
        self.interval_observers: list[Callable[[int, float, float, bool], None]] = []
        self._thread = threading.Thread(target=self._run, name=f"hastate-etcd-{instance_id}",
                                        daemon=True)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._new_session()
        self._thread.start()

    def stop(self) -> None:
        """Stop campaigning; revoke the session (the leader key and member entry go with it)."""
        self._step_down()
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)
        try:
            if self.session:
                self.client.call("/v3/lease/revoke", {"ID": str(self.session)})
        except HAStateError as exc:
            logger.info("session revoke failed; it expires after its TTL",
                        extra={"reason": str(exc)})
        with self._lock:
            self.token = None

    def poke(self) -> None:
        """The mirror saw hastate's own keys change: look at leadership again."""
        self._wake.set()

    # -- session ------------------------------------------------------------------------
    def _new_session(self) -> None:
        sent = self.clock()
        answer = self.client.call("/v3/lease/grant", {"TTL": str(int(self.ttl))})
        with self._lock:
            self.session = int(answer["ID"])
            self.deadline = sent + int(answer.get("TTL", self.ttl)) - margin(self.ttl)
            self.token = None
        self._publish()
        logger.info("etcd session granted", extra={"instance": self.instance_id,
                                                  "lease": self.session})

    def _keep_alive(self) -> None:
        sent = self.clock()
        answer = self.client.call("/v3/lease/keepalive", {"ID": str(self.session)})
        ttl = int(answer.get("result", answer).get("TTL", 0))
        if ttl <= 0:
            logger.warning("etcd session expired; starting a new one",
                           extra={"instance": self.instance_id, "lease": self.session})
            self._new_session()
            return
        with self._lock:
            self.deadline = max(self.deadline, sent + ttl - margin(self.ttl))
        self._tell()

    def _tell(self, final: bool = False) -> None:
        with self._lock:
            token, since = self.token, self._since
            until = self.clock() if final else self.deadline
        if token is not None:
            for observe in self.interval_observers:
                observe(token, since, until, final)

    def _step_down(self) -> None:
        """Stop acting as leader now (before the key is released)."""
        with self._lock:
            self.stepping_down = True
        self._tell(final=True)

    def _publish(self) -> None:
        """Write this instance's member entry on its session lease."""
        value = json.dumps({**self.entry, "id": self.instance_id, "health": self.health,
                            "lease": self.session})
        self.client.call("/v3/kv/put", {"key": b64(self.layout.member(self.instance_id)),
                                        "value": b64(value), "lease": str(self.session)})

    def publish_health(self, ok: bool) -> None:
        """Publish ``ok`` when it changed (the entry's presence already says alive). An
        unhealthy instance does not campaign and declines a handover naming it."""
        if ok == self.health:
            return
        self.health = ok
        self._wake.set()
        try:
            self._publish()
        except HAStateError as exc:
            logger.warning("could not publish health", extra={"reason": str(exc)})

    # -- leadership ---------------------------------------------------------------------
    def is_leader(self) -> bool:
        with self._lock:
            return self.token is not None and not self.stepping_down and \
                self.clock() < self.deadline

    def fencing_token(self) -> int | None:
        with self._lock:
            return self.token if self.is_leader() else None

    def leader(self) -> str | None:
        info = self.mirror.leader
        return info.value.decode() if info is not None else None

    def remaining(self) -> float:
        """Seconds of session left by the local clock."""
        with self._lock:
            return max(0.0, self.deadline - self.clock())

    def _run(self) -> None:
        next_keepalive = self.clock() + self.ttl / 3
        while not self._stop.is_set():
            self._wake.wait(max(0.0, min(0.5, next_keepalive - self.clock())))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self.clock() >= next_keepalive:
                    next_keepalive = self.clock() + self.ttl / 3
                    self._keep_alive()
                self._observe()
            except HAStateError as exc:
                logger.info("etcd election step failed; retrying",
                            extra={"instance": self.instance_id, "reason": str(exc)})
                next_keepalive = min(next_keepalive, self.clock() + 0.2)

    def _observe(self) -> None:
        """Drop a key we no longer hold, step down for a handover, or campaign."""
        leader, handover = self.mirror.leader, self.mirror.handover
        with self._lock:
            token = self.token
        if token is not None:
            if self.mirror.revision >= token and (leader is None or
                                                  leader.create_revision != token):
                self._lost("the leader key was deleted or replaced")
            elif (handover is not None and handover.value.decode() != self.instance_id) or \
                    (self.stepping_down and not self._handing_over):
                # a handover named another instance, or ours failed half-way (it may still
                # apply): release the key rather than hold it without acting
                self._hand_over_key(token, None, None)
            return
        mine = handover is not None and handover.value.decode() == self.instance_id
        if mine and not self.health:        # an unhealthy target declines the handover
            self.client.call("/v3/kv/txn", {
                "compare": [{"key": b64(self.layout.handover), "target": "VALUE",
                             "result": "EQUAL", "value": b64(self.instance_id)}],
                "success": [{"request_delete_range": {"key": b64(self.layout.handover)}}]})
        elif leader is None and self.health and (handover is None or mine):
            self._campaign(handover is not None)

    def _lost(self, why: str) -> None:
        with self._lock:
            if self.token is not None:      # a handover of ours is no surprise: info only
                logger.log(logging.INFO if self.stepping_down else logging.WARNING,
                           "etcd leadership lost: %s", why,
                           extra={"instance": self.instance_id, "token": self.token})
            self.token = None
            self.stepping_down = False

    def _campaign(self, handed_over: bool) -> None:
        compares = [{"key": b64(self.layout.leader), "target": "CREATE", "result": "EQUAL",
                     "create_revision": "0"}]
        success: list[dict[str, Any]] = [{"request_put": {
            "key": b64(self.layout.leader), "value": b64(self.instance_id),
            "lease": str(self.session)}}]
        if handed_over:
            compares.append({"key": b64(self.layout.handover), "target": "VALUE",
                             "result": "EQUAL", "value": b64(self.instance_id)})
            success.append({"request_delete_range": {"key": b64(self.layout.handover)}})
        else:
            compares.append({"key": b64(self.layout.handover), "target": "CREATE",
                             "result": "EQUAL", "create_revision": "0"})
        sent = self.clock()
        try:
            answer = self.client.call("/v3/kv/txn", {"compare": compares, "success": success})
        except StoreRefusedError as exc:
            if exc.code == 5:       # our session lease ended under us
                self._new_session()
                return
            raise
        if answer.get("succeeded"):
            with self._lock:
                self.token = header_revision(answer)
                self._since = sent
                self.stepping_down = False
                self.leader_changes += 1
            self._tell()
            logger.info("etcd leadership acquired", extra={"instance": self.instance_id,
                                                           "token": self.token})

    def _hand_over_key(self, token: int, target: str | None, target_lease: int | None) -> bool:
        """Stop acting, then delete our key (and name ``target`` on its lease) in one Txn."""
        self._step_down()
        success: list[dict[str, Any]] = [{"request_delete_range": {"key": b64(self.layout.leader)}}]
        if target is not None:
            success.append({"request_put": {"key": b64(self.layout.handover),
                                            "value": b64(target), "lease": str(target_lease)}})
        answer = self.client.call("/v3/kv/txn", {
            "compare": [{"key": b64(self.layout.leader), "target": "CREATE", "result": "EQUAL",
                         "create_revision": str(token)}],
            "success": success})
        self._lost("handed over" if answer.get("succeeded") else "the leader key moved")
        return bool(answer.get("succeeded"))

    def transfer(self, target: str, timeout: float) -> float:
        """Hand leadership to ``target``; seconds until the mirror shows it leading.

        :raises FailoverError: ``target`` has no live session, or did not take over in time.
        """
        started = self.clock()
        entry = self.mirror.member_entries().get(target) or self._member_entry(target)
        if entry is None:
            raise FailoverError(f"instance {target!r} has no live etcd session; start it "
                                "first (known live: "
                                f"{sorted(self.mirror.member_entries())})")
        if target == self.instance_id and self.is_leader():
            return 0.0
        if not entry.get("health"):
            raise FailoverError(f"instance {target!r} reports itself unhealthy; pick another "
                                "target")
        with self._lock:
            token = self.token
        if token is not None:
            self._handing_over = True
            try:
                self._hand_over_key(token, target, int(entry["lease"]))
            finally:
                self._handing_over = False
                self._wake.set()
        else:
            self.client.call("/v3/kv/txn", {
                "compare": [{"key": b64(self.layout.handover), "target": "CREATE",
                             "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": b64(self.layout.handover),
                                             "value": b64(target),
                                             "lease": str(int(entry["lease"]))}}]})
        deadline = started + timeout
        while self.clock() < deadline:
            leader = self.mirror.leader
            if leader is not None and leader.value.decode() == target:
                return self.clock() - started
            time.sleep(0.02)
        raise FailoverError(f"{target} did not take leadership within {timeout:.1f}s")

    def _member_entry(self, instance: str) -> dict[str, Any] | None:
        """``instance``'s entry read by etcd's quorum (one that started a moment ago may not
        be in this instance's mirror yet); None when it has no live session."""
        kvs = self.client.call("/v3/kv/range", {"key": b64(self.layout.member(instance))}
                               ).get("kvs") or []
        try:
            return json.loads(unb64(kvs[0].get("value"))) if kvs else None
        except ValueError:
            return None

    def candidates(self, healthy_only: bool) -> list[tuple[int, str]]:
        """(0, id) of every other instance with a live session (healthy ones only)."""
        return [(0, instance) for instance, entry in self.mirror.member_entries().items()
                if instance != self.instance_id and (entry.get("health") or not healthy_only)]
