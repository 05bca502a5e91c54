"""The lock recipe on a real single-node cluster: a key created if absent under a lease,
fencing tokens = create revisions, waiters that watch instead of polling, expiry through
the lease."""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.errors import LockHeldError, LockLostError
from hastate.recipes import lock as lock_module
from hastate.recipes.lock import Lock, LockGrant
from hastate.state import txn
from hastate.testing import free_port, wait_for


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[StateManager]:
    manager = StateManager("solo", {"solo": f"127.0.0.1:{free_port()}"},
                           data_dir=tmp_path / "solo", cluster_name="locks", serve_http=False)
    manager.start(wait_ready=10)
    ops: list[str] = []
    manager.proposal_observers.append(lambda op, _seconds, _outcome: ops.append(op))
    manager.ops = ops                                  # type: ignore[attr-defined]
    try:
        yield manager
    finally:
        manager.stop()
        assert not [op for op in ops if op.startswith("lock_")]   # nothing proposes them


def key_of(sm: StateManager, name: str) -> txn.KeyValue | None:
    return sm.transaction((), [txn.get(f"locks/{name}")]).responses[0]


def test_grant_is_a_key_on_a_lease_and_the_token_its_create_revision(sm) -> None:
    a, b = sm.lock("router", ttl=5.0), sm.lock("router", ttl=5.0)
    grant = a.acquire(blocking=False)
    assert a.owner != b.owner and a.owner.startswith("solo/")
    stored = key_of(sm, "router")
    assert stored.create_revision == grant.token == a.token
    assert stored.value == {"owner": a.owner, "lease": grant.lease}
    assert sm.machine.lease_of("locks/router") == grant.lease
    assert 0 < grant.expires_at - time.monotonic() <= 5.0
    with pytest.raises(LockHeldError) as info:
        b.acquire(blocking=False)
    assert (info.value.owner, info.value.token, info.value.lease) == \
        (a.owner, grant.token, grant.lease)
    assert b.holder() == LockGrant(grant.token, a.owner, grant.lease)
    assert sm.leases().keys() == {grant.lease}      # b's attempt left no lease behind
    assert a.acquire(blocking=False).token == grant.token          # idempotent
    assert a.release() is True and key_of(sm, "router") is None and sm.leases() == {}
    assert a.token is None and a.release() is False and b.holder() is None
    again = b.acquire(blocking=False)
    assert again.token > grant.token


def test_a_stale_release_deletes_nothing(sm) -> None:
    a, b = sm.lock("L", ttl=5.0), sm.lock("L", ttl=5.0)
    ga = a.acquire(blocking=False)
    sm.revoke_lease(ga.lease)                            # a's lease ends (as if expired)
    gb = b.acquire(blocking=False)
    assert gb.token > ga.token and a.token is None
    assert a.release() is False                          # compares on a's token: no delete
    assert key_of(sm, "L").create_revision == gb.token and b.token == gb.token
    with pytest.raises(LockLostError):
        a.renew()


def test_a_waiter_watches_and_is_granted_when_the_holder_releases(sm) -> None:
    a, b = sm.lock("L", ttl=60.0), sm.lock("L", ttl=60.0)   # no lease ends meanwhile
    ga = a.acquire()
    got: list[LockGrant] = []
    waiter = threading.Thread(target=lambda: got.append(b.acquire(timeout=30)))
    waiter.start()
    wait_for(lambda: sm.ops.count("txn") >= 2, timeout=10, what="b's first attempt")
    time.sleep(1.0)
    writes_while_waiting = len(sm.ops)
    time.sleep(1.0)
    assert len(sm.ops) == writes_while_waiting           # waiting proposes nothing
    assert a.release() is True
    waiter.join(30)
    assert got and got[0].token > ga.token and b.token == got[0].token
    b.release()


def test_an_expired_holder_is_taken_over_and_stops_acting_first(sm) -> None:
    a = sm.lock("L", ttl=1.0)                            # never renewed: a GC pause
    ga = a.acquire()
    b = sm.lock("L", ttl=1.0)
    gb = b.acquire(timeout=30)                           # granted once a's lease expired
    assert gb.token > ga.token
    assert a.token is None and not a.is_held()           # a's own clock said so first
    with pytest.raises(LockLostError):
        a.renew()
    assert a.lost and a.release() is False and b.token == gb.token


def test_blocking_acquire_times_out_naming_the_holder(sm) -> None:
    a, b = sm.lock("L", ttl=30.0), sm.lock("L")
    ga = a.acquire()
    started = time.monotonic()
    with pytest.raises(LockHeldError, match="after waiting") as info:
        b.acquire(timeout=0.5)
    assert time.monotonic() - started >= 0.5
    assert info.value.owner == a.owner and info.value.token == ga.token


def test_auto_renew_keeps_the_lock_and_reports_a_revoked_lease_once(sm) -> None:
    lost: list[LockGrant] = []
    done = threading.Event()
    lock = sm.lock("L", ttl=1.5, auto_renew=True,
                   on_lost=lambda g: (lost.append(g), done.set()))
    grant = lock.acquire()
    time.sleep(3.0)
    assert lock.token == grant.token and not lost and sm.ops.count("lease_keepalive") >= 2
    sm.revoke_lease(grant.lease)                         # e.g. an operator ended it
    assert done.wait(5.0)
    assert [g.token for g in lost] == [grant.token] and lock.lost and lock.token is None
    time.sleep(0.5)
    assert len(lost) == 1


def test_renew_notices_a_key_deleted_by_hand(sm) -> None:
    lock = sm.lock("L", ttl=5.0)
    grant = lock.acquire()
    assert lock.renew().token == grant.token
    sm.delete("locks/L")                                 # a forced release
    with pytest.raises(LockLostError, match="deleted"):
        lock.renew()
    assert lock.lost and lock.token is None


def test_context_manager_and_bad_arguments(sm) -> None:
    lock = sm.lock("L", ttl=5.0)
    with lock as grant:
        assert lock.token == grant.token
    assert lock.token is None and key_of(sm, "L") is None
    with pytest.raises(ValueError):
        Lock(sm, "")
    with pytest.raises(ValueError):
        Lock(sm, "L", ttl=0)


def test_the_recipe_reads_nothing_but_public_primitives() -> None:
    assert ".machine" not in inspect.getsource(lock_module)


def test_manager_factory_binds_lock() -> None:
    host = SimpleNamespace(instance_id="i", write_timeout=1.0)
    lock = StateManager.lock(host, "L", 3.0, auto_renew=True)   # type: ignore[arg-type]
    assert isinstance(lock, Lock) and lock.manager is host and lock.ttl == 3.0
    assert lock.auto_renew and lock.key == "locks/L"
