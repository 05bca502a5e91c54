"""Locks with fencing tokens against real node processes on loopback: a lock is a key under
``locks/`` created if absent on its holder's lease; its token is the key's create revision."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from hastate import LockHeldError, LockLostError
from hastate.consensus.node import DUMP
from hastate.state.dump import decode_dump
from hastate.testing import wait_for

pytestmark = pytest.mark.integration


class FencedResource:
    """Stands in for a storage service: accepts a write only if its token >= the highest seen.

    Each accepted write also records the token this replica names as the current holder at
    that moment (the create revision of the lock's key).
    """

    def __init__(self, machine, name: str) -> None:
        self.machine = machine
        self.name = name
        self.highest = 0
        self.accepted: list[tuple[int, str, object, int | None]] = []
        self.rejected: list[tuple[int, str, object]] = []
        self._mutex = threading.Lock()

    def write(self, token: int, who: str, value: object) -> bool:
        with self._mutex:
            if token < self.highest:
                self.rejected.append((token, who, value))
                return False
            self.highest = token
            entry = self.machine.records([f"locks/{self.name}"]).get(f"locks/{self.name}")
            self.accepted.append((token, who, value, entry[2] if entry else None))
            return True


def same_everywhere(cluster, nodes=("instance-2", "instance-3")) -> bool:
    want = cluster.sm.machine.state_hash()     # covers the keys and the lease table
    return all((cluster.state(n, "local") or {}).get("state_hash") == want for n in nodes)


def test_contention_expiry_takeover_and_fencing_of_the_stale_holder(cluster) -> None:
    sm = cluster.sm
    a, b = sm.lock("router", ttl=1.0), sm.lock("router", ttl=1.0)
    resource = FencedResource(sm.machine, "router")
    ga = a.acquire(blocking=False)
    assert a.token == ga.token and resource.write(ga.token, "a", 1)
    with pytest.raises(LockHeldError) as info:
        b.acquire(blocking=False)
    assert info.value.owner == a.owner and info.value.lease == ga.lease
    assert info.value.owner.startswith("instance-1/")
    # a stops renewing (a long GC pause); b waits until a's lease expires
    gb = b.acquire(timeout=10)
    assert gb.token > ga.token and a.token is None     # a's own clock ran out first
    assert resource.write(gb.token, "b", 2)
    assert not resource.write(ga.token, "a", 3)           # a wakes up: refused
    with pytest.raises(LockLostError):
        a.renew()
    assert a.release() is False and b.renew().token == gb.token
    assert [w[:3] for w in resource.accepted] == [(ga.token, "a", 1), (gb.token, "b", 2)]
    assert all(w[0] == w[3] for w in resource.accepted)   # from the current holder only
    wait_for(lambda: same_everywhere(cluster))
    assert b.release() is True and sm.get_state("local") == {} and sm.leases() == {}


HOLDER = """
import dataclasses, json, pathlib, sys, time
from hastate import StateManager
sm = StateManager.from_config(sys.argv[1], sys.argv[2])
sm.start(wait_ready=30)
lock = sm.lock("router", ttl=2.0, auto_renew=True)
grant = lock.acquire(timeout=30)
out = pathlib.Path(sys.argv[3])
out.with_suffix(".tmp").write_text(json.dumps(dataclasses.asdict(grant)))
out.with_suffix(".tmp").rename(out)
while True:
    time.sleep(1)
"""


def test_killed_holder_process_is_taken_over_with_a_larger_token(cluster, tmp_path) -> None:
    """instance-2 runs as a bot holding the lock (auto-renewed); SIGKILL; instance-1 takes it."""
    cluster.kill("instance-2", signal.SIGTERM)
    out = tmp_path / "grant.json"
    log = open(tmp_path / "holder.log", "wb")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cluster.config_path),
                               "instance-2", str(out)], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    log.close()
    try:
        wait_for(out.exists, timeout=30, what="remote holder's grant")
        remote = json.loads(out.read_text())
        time.sleep(2.5)                                    # it renews past its first ttl
        b = cluster.sm.lock("router", ttl=2.0)
        with pytest.raises(LockHeldError) as info:
            b.acquire(blocking=False)
        assert info.value.owner == remote["owner"] and remote["owner"].startswith("instance-2/")
        assert info.value.token == remote["token"]
        assert info.value.lease == remote["lease"]           # kept alive by the holder
        holder.kill()
        holder.wait(10)
        grant = b.acquire(timeout=15)                         # once the lease expired
        assert grant.token > remote["token"] and grant.owner == b.owner
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_zero_lost_updates_when_holders_are_paused_and_taken_over(cluster) -> None:
    sm = cluster.sm
    resource = FencedResource(sm.machine, "ledger")
    believed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    first_grant: list[int] = []          # the holder of the first grant gets paused
    first_mutex = threading.Lock()

    def worker(n: int) -> None:
        lock = sm.lock("ledger", ttl=0.5)
        mine = believed.setdefault(lock.owner, [])
        try:
            for hold in range(3):
                grant = lock.acquire(timeout=20)
                with first_mutex:
                    paused = not first_grant
                    first_grant.append(grant.token)
                for i in range(4):
                    value = (n, hold, i)
                    if resource.write(grant.token, lock.owner, value):
                        mine.append(value)
                if paused:                                # paused past expiry, taken over
                    wait_for(lambda: resource.highest > grant.token, timeout=15)
                    assert not resource.write(grant.token, lock.owner, "stale")
                    with pytest.raises(LockLostError):
                        lock.renew()
                lock.release()
        except BaseException as exc:   # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    accepted = resource.accepted
    assert len(accepted) == 3 * 3 * 4                     # every write of every hold landed
    assert sorted(v for vs in believed.values() for v in vs) == sorted(w[2] for w in accepted)
    tokens = [w[0] for w in accepted]
    assert tokens == sorted(tokens)                       # the resource never went backwards
    owners_of = {}
    for token, owner, _, current in accepted:
        assert owners_of.setdefault(token, owner) == owner    # a token belongs to one owner
        assert token == current                               # written by the current holder
    assert len(owners_of) == 9 and [r[2] for r in resource.rejected] == ["stale"]


def test_lock_survives_leader_failover(cluster) -> None:
    sm = cluster.sm
    lost: list = []
    a = sm.lock("router", ttl=1.5, auto_renew=True, on_lost=lost.append)
    ga = a.acquire(timeout=10)
    for target in ("instance-2", "instance-3", "instance-1"):
        sm.trigger_failover(target, timeout=15)
        assert sm.leader() == target
        time.sleep(0.6)                                   # renewals go through the new leader
        assert a.token == ga.token and not lost
        with pytest.raises(LockHeldError) as info:
            sm.lock("router").acquire(blocking=False)
        assert info.value.owner == a.owner and info.value.token == ga.token
    wait_for(lambda: same_everywhere(cluster))
    assert a.release() is True
    assert sm.lock("router").acquire(blocking=False).token > ga.token


def test_lock_survives_restart_of_every_node_via_dump_and_journal(cluster) -> None:
    a = cluster.sm.lock("router", ttl=60.0)
    ga = a.acquire(timeout=10)
    # put the lock's key and lease into the embedded node's state.dump (compaction)
    cluster.sm.node.call_soon(cluster.sm.node.syncobj.forceLogCompaction)
    wait_for(lambda: cluster.sm.node.syncobj.compactions_total >= 1)
    _, body = decode_dump((cluster.workdir / "data" / "instance-1" / DUMP).read_bytes(),
                          source="dump", cluster="itest")
    assert body["state"]["data"]["locks/router"][2] == ga.token          # create revision
    assert [lease[0] for lease in body["state"]["leases"]] == [ga.lease]
    other = cluster.sm.lock("other", ttl=60.0)
    go = other.acquire(timeout=10)                          # only in the journal tail
    wait_for(lambda: same_everywhere(cluster))
    before = cluster.sm.machine.records(["locks/router", "locks/other"])
    cluster.stop_all()
    cluster.sm.stop()
    sm = cluster.start_embedded(http=False)
    cluster.start("instance-2")
    cluster.start("instance-3")
    sm.wait_ready(20)
    sm.get_state()                                          # caught up through the leader
    assert sm.machine.records(["locks/router", "locks/other"]) == before
    assert set(sm.leases()) == {ga.lease, go.lease}         # the countdowns restarted
    with pytest.raises(LockHeldError) as info:
        sm.lock("router").acquire(blocking=False)
    assert info.value.owner == a.owner and info.value.token == ga.token
    sm.revoke_lease(ga.lease)                               # the old holder's lease ends
    assert sm.lock("router").acquire(blocking=False).token > max(ga.token, go.token)


def test_an_unrenewed_lock_disappears_through_its_lease_on_every_node(cluster) -> None:
    """No purge job: the leader expires the holder's lease and the key goes everywhere."""
    stale, live = cluster.sm.lock("stale", ttl=0.3), cluster.sm.lock("live", ttl=60.0)
    gs, gl = stale.acquire(), live.acquire()
    wait_for(lambda: "locks/stale" not in cluster.sm.get_state("local"), timeout=10)
    assert set(cluster.sm.get_state()) == {"locks/live"} and set(cluster.sm.leases()) == {gl.lease}
    assert stale.token is None and gs.lease not in cluster.sm.leases()
    wait_for(lambda: same_everywhere(cluster), timeout=20)
