"""The engine contract, proved the same way on every engine (see hastate.engines.contract).

Each test runs on a deployment of three bots (``conftest.deployment``) and asserts on
outcomes a bot relies on: values, revisions, orderings, who may act.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from hastate.errors import ConflictError, LeaseNotFoundError
from hastate.events import NO_STREAM, NewEvent
from hastate.state import txn
from hastate.testing import wait_for

from .deployments import Deployment


def test_a_write_on_any_bot_is_read_linearizably_on_every_other(deployment: Deployment,
                                                                prefix: str) -> None:
    written_at = dt.datetime.now()
    for n, sm in enumerate(deployment.managers.values()):
        revision = sm.save_state({f"{prefix}n": n, f"{prefix}at": written_at})
        for other in deployment.managers.values():
            state, seen = other.get_state(keys=[f"{prefix}n", f"{prefix}at"],
                                          with_revision=True)
            assert state == {f"{prefix}n": n, f"{prefix}at": written_at}
            assert seen >= revision


def test_revisions_grow_and_keys_carry_etcd_style_revisions(deployment: Deployment,
                                                            prefix: str) -> None:
    sm = deployment.leader()
    key = f"{prefix}k"
    first = sm.save_state({key: "a"})
    second = sm.save_state({key: "b"})
    assert second > first
    value, mod, create, version = sm.records([key])[key]
    assert (mod, create, version) == (second, first, 2)
    gone = sm.delete(key)
    assert gone > second and key not in sm.get_state(keys=[key])
    again = sm.save_state({key: "c"})
    assert sm.records([key])[key][1:] == (again, again, 1)


def test_compare_and_set_names_the_revision_it_found(deployment: Deployment,
                                                     prefix: str) -> None:
    a, b = list(deployment.managers.values())[:2]
    key = f"{prefix}cas"
    created = a.compare_and_set(key, 1, 0)
    with pytest.raises(ConflictError) as refused:
        b.compare_and_set(key, 2, 0)
    assert refused.value.actual == created
    assert b.compare_and_set(key, 3, created) > created
    assert a.get_state(keys=[key]) == {key: 3}


def test_a_transaction_runs_one_branch_atomically(deployment: Deployment,
                                                  prefix: str) -> None:
    sm = deployment.managers[sorted(deployment.managers)[-1]]
    pos, pnl = f"{prefix}pos", f"{prefix}pnl"
    base = sm.save_state({pos: 5})
    done = sm.transaction([txn.mod_revision(pos) == base],
                          [txn.delete(pos), txn.put(pnl, 12.5)], [txn.get(pos)])
    assert done.succeeded and sm.get_state(keys=[pos, pnl]) == {pnl: 12.5}
    refused = sm.transaction([txn.mod_revision(pnl) == base], [txn.put(pnl, 0)],
                             [txn.get(pnl)])
    assert not refused.succeeded and refused.responses[0].value == 12.5
    assert sm.get_state(keys=[pnl]) == {pnl: 12.5}


def test_a_watch_from_a_revision_sees_every_change_in_order_and_resumes(
        deployment: Deployment, prefix: str) -> None:
    writer, reader = list(deployment.managers.values())[:2]
    start = writer.save_state({f"{prefix}w0": 0})
    revisions = [start] + [writer.save_state({f"{prefix}w{i}": i}) for i in range(1, 6)]
    revisions.append(writer.delete(f"{prefix}w0"))
    with reader.watch(prefix, start_revision=start, prev_value=True) as events:
        seen = [events.get(timeout=15) for _ in revisions]
    assert [e.revision for e in seen] == revisions
    assert [e.type for e in seen] == ["put"] * 6 + ["delete"]
    assert seen[-1].prev_value == 0 and seen[3].value == 3
    with reader.watch(prefix, start_revision=revisions[3] + 1) as resumed:
        assert [resumed.get(timeout=15).revision for _ in revisions[4:]] == revisions[4:]


def test_exactly_one_bot_leads_and_a_transfer_raises_the_fencing_token(
        deployment: Deployment) -> None:
    leader = deployment.leader()
    token = leader.fencing_token()
    assert token is not None
    assert [sm.is_leader() for sm in deployment.managers.values()].count(True) == 1
    target = next(i for i, sm in deployment.managers.items() if sm is not leader)
    changes: list[int] = []
    deployment.managers[target].watch_leader(on_become_leader=changes.append)
    leader.trigger_failover(target)
    new = deployment.managers[target]
    wait_for(lambda: new.is_leader() and not leader.is_leader(), timeout=20)
    assert new.fencing_token() > token and leader.fencing_token() is None
    wait_for(lambda: changes, timeout=10)
    assert changes[0] == new.fencing_token() or changes[0] > token
    assert {sm.leader() for sm in deployment.managers.values()} == {target}
    status = new.status()
    assert status["engine"] == deployment.engine and status["is_leader"]
    assert status["leader"] == target and status["fencing_token"] == new.fencing_token()


def test_keys_under_a_lease_vanish_with_it(deployment: Deployment, prefix: str) -> None:
    a, b = list(deployment.managers.values())[:2]
    lease = a.grant_lease(30)
    a.save_state({f"{prefix}held": 1}, lease=lease)
    assert b.get_state(keys=[f"{prefix}held"]) == {f"{prefix}held": 1}
    assert a.revoke_lease(lease) is True
    assert b.get_state(keys=[f"{prefix}held"]) == {}
    with pytest.raises(LeaseNotFoundError):
        a.save_state({f"{prefix}late": 1}, lease=lease)
    a.save_state({f"{prefix}short": 1}, ttl=1)
    wait_for(lambda: b.get_state(keys=[f"{prefix}short"]) == {}, timeout=20)


def test_leases_granted_at_the_same_time_get_distinct_ids(deployment: Deployment) -> None:
    """Grants racing on every bot (two threads each, so proposals wait together and may
    share log entries) are each a lease of its own."""
    managers = list(deployment.managers.values())
    granted: list[int] = []
    errors: list[BaseException] = []

    def grant(sm) -> None:
        try:
            granted.extend(sm.grant_lease(30).id for _ in range(2))
        except BaseException as exc:     # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=grant, args=(sm,)) for sm in managers for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(granted) == len(threads) * 2
    assert len(set(granted)) == len(granted), sorted(granted)
    for lease in granted:
        managers[0].revoke_lease(lease)


def test_a_lock_excludes_across_bots_and_its_tokens_grow(deployment: Deployment,
                                                         prefix: str) -> None:
    a, b = list(deployment.managers.values())[:2]
    inside: list[str] = []
    tokens: list[int] = []
    overlap = threading.Event()

    def worker(sm, name: str) -> None:
        for _ in range(3):
            with sm.lock(f"{prefix}lock", ttl=10.0) as grant:
                if inside:
                    overlap.set()
                inside.append(name)
                tokens.append(grant.token)
                inside.remove(name)

    threads = [threading.Thread(target=worker, args=(sm, n)) for n, sm in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not overlap.is_set() and len(tokens) == 6
    assert tokens == sorted(tokens) and len(set(tokens)) == 6


def test_event_streams_append_and_read_in_order(deployment: Deployment, prefix: str) -> None:
    a, b = list(deployment.managers.values())[:2]
    stream = f"{prefix}orders"
    a.events.append(stream, [NewEvent("Placed", {"qty": 1})], expected_version=NO_STREAM)
    b.events.append(stream, [NewEvent("Filled", {"qty": 1})], expected_version=0)
    read = [e.type for e in a.events.read_stream(stream)]
    assert read == ["Placed", "Filled"]


def test_a_value_that_cannot_be_stored_is_refused_before_anything_is_written(
        deployment: Deployment, prefix: str) -> None:
    sm = deployment.leader()
    before = sm.revision()
    with pytest.raises(TypeError, match="cannot be stored"):
        sm.save_state({f"{prefix}ok": 1, f"{prefix}bad": object()})
    assert sm.get_state(keys=[f"{prefix}ok"]) == {} and sm.revision() == before
