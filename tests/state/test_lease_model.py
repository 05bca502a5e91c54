"""Leases and TTL keys against a pure-Python model with a fake clock.

Three replicas apply the same log; each runs a :class:`LeaseExpirer` on one fake monotonic
clock, and only the simulated leader's proposes. The model below is written from the rules
in docs/leases.md, independently of ``state/leases.py``: a lease lives ``ttl`` seconds past
the later of its last grant/keep-alive and the moment the current leader took over; keys
put with a lease are deleted when it ends, a put without it detaches the key.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings, strategies as st

from hastate.state import leases, txn
from hastate.state.codec import Command, encode_value
from hastate.state.housekeeping import LeaseExpirer
from hastate.state.machine import ReplicatedState

KEYS = ["a", "b", "c"]


class Model:
    """What the lease rules promise, on one fake clock."""

    def __init__(self) -> None:
        self.leases: dict[int, list[float]] = {}    # id -> [ttl, last refresh time]
        self.keys: dict[str, tuple[Any, int]] = {}  # key -> (value, lease or 0)
        self.leader_since = 0.0

    def deadline(self, lease: int) -> float:
        ttl, refreshed = self.leases[lease]
        return max(refreshed, self.leader_since) + ttl

    def end(self, lease: int) -> list[str]:
        del self.leases[lease]
        doomed = sorted(k for k, (_, owner) in self.keys.items() if owner == lease)
        for key in doomed:
            del self.keys[key]
        return doomed


class Cluster:
    """Three replicas fed the same commands at consecutive indexes, one fake clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.replicas = [ReplicatedState() for _ in range(3)]
        self.index = 0
        self.term = 1
        self.leader = 0
        self.inject: Command | None = None     # applied just before the next proposal
        self.expirers = [LeaseExpirer(r, leader_term=self._term_of(i), propose=self.propose,
                                      clock=lambda: self.now)
                         for i, r in enumerate(self.replicas)]
        self.expirers[0].observe_leadership()

    def _term_of(self, i: int):
        return lambda: self.term if self.leader == i else None

    def apply(self, command: Command) -> tuple:
        self.index += 1
        results = [r.apply_at(self.index, command.encode()) for r in self.replicas]
        assert results[0] == results[1] == results[2]
        return results[0]

    def propose(self, command: Command) -> tuple:
        if self.inject is not None:
            injected, self.inject = self.inject, None
            self.apply(injected)
        return self.apply(command)


def put_command(key: str, value: Any, lease: int) -> Command:
    ops = [txn.put(key, value, lease=lease)]
    return Command(op="txn", txn=txn.build([], ops, []))


OPS = st.one_of(
    st.tuples(st.just("grant"), st.sampled_from([1.0, 2.0, 5.0])),
    st.tuples(st.just("keepalive"), st.integers(0, 5)),
    st.tuples(st.just("revoke"), st.integers(0, 5)),
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.integers(-1, 5)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("advance"), st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0])),
    st.tuples(st.just("check"), st.just(-1)),
    st.tuples(st.just("check"), st.integers(0, 2)),
    st.tuples(st.just("check"), st.just(-1)),
    st.tuples(st.just("leader_change"), st.integers(0, 2)),
    st.tuples(st.just("race"), st.integers(0, 5)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(OPS, max_size=40))
@example([("grant", 5.0), ("advance", 3.0), ("leader_change", 1), ("advance", 2.0),
          ("check", -1), ("advance", 3.0), ("check", -1)])
def test_leases_follow_the_model(ops: list[tuple]) -> None:
    cluster, model = Cluster(), Model()
    granted: list[int] = []             # every lease id ever granted, in order
    refreshed_at: dict[int, float] = {}  # lease -> last refresh (clients' view, no leader rule)
    counter = 0
    expiries = [0]                       # leases the model ended by expiry

    def pick(n: int) -> int:
        return granted[n % len(granted)] if granted else 12345

    def expire_due() -> list[int]:
        due = sorted(lease for lease in model.leases if cluster.now >= model.deadline(lease))
        for lease in due:
            assert cluster.now >= refreshed_at[lease] + model.leases[lease][0]  # never early
            model.end(lease)
        expiries[0] += len(due)
        return due

    for op in ops:
        kind = op[0]
        if kind == "grant":
            result = cluster.apply(leases.grant_command(op[1]))
            assert result == ("lease", cluster.index, op[1])
            granted.append(result[1])
            model.leases[result[1]] = [op[1], cluster.now]
            refreshed_at[result[1]] = cluster.now
        elif kind == "keepalive":
            lease = pick(op[1])
            result = cluster.apply(leases.keepalive_command(lease))
            if lease in model.leases:
                assert result == ("lease", lease, model.leases[lease][0])
                model.leases[lease][1] = refreshed_at[lease] = cluster.now
            else:
                assert result == ("lease", 0, 0.0)
        elif kind == "revoke":
            lease = pick(op[1])
            before = cluster.replicas[0].revision
            result = cluster.apply(leases.revoke_command(lease))
            if lease in model.leases:
                doomed = model.end(lease)
                assert result == ("lease_end", [lease], before + bool(doomed))
            else:
                assert result == ("lease_end", [], before)
        elif kind == "put":
            lease = 0 if op[2] < 0 else pick(op[2])
            counter += 1
            result = cluster.apply(put_command(op[1], counter, lease))
            if lease and lease not in model.leases:
                assert result == ("no_lease", lease)
            else:
                assert result[0] == "txn" and result[1]
                model.keys[op[1]] = (counter, lease)
        elif kind == "delete":
            cluster.apply(Command(op="delete", keys=(op[1],)))
            model.keys.pop(op[1], None)
        elif kind == "advance":
            cluster.now += op[1]
        elif kind == "check":         # -1: the leader's expirer; else that node's
            node = cluster.leader if op[1] < 0 else op[1]
            expired = cluster.expirers[node].run_once()
            if node == cluster.leader:
                assert expired == expire_due()
            else:
                assert expired == []            # followers never propose
        elif kind == "leader_change":
            cluster.expirers[cluster.leader].run_once()   # the old leader's last look
            expire_due()
            cluster.term += 1
            cluster.leader = op[1]
            cluster.expirers[op[1]].observe_leadership()
            model.leader_since = cluster.now
        elif kind == "race":
            # The leader decides on what is due, but a keep-alive commits first: it wins.
            lease = pick(op[1])
            cluster.inject = leases.keepalive_command(lease)
            expired = cluster.expirers[cluster.leader].run_once()
            cluster.inject = None
            any_due = any(cluster.now >= model.deadline(x) for x in model.leases)
            if any_due and lease in model.leases:   # no proposal, no injected keep-alive
                model.leases[lease][1] = refreshed_at[lease] = cluster.now
            due = expire_due()
            assert expired == due
        for replica in cluster.replicas:
            table = replica.leases()
            assert sorted(table) == sorted(model.leases)
            assert {k: v for k, v in replica.snapshot().items()} == \
                {k: v for k, (v, _) in model.keys.items()}
            for key, (_, lease) in model.keys.items():
                assert replica.lease_of(key) == lease
                assert (key in table[lease].keys) if lease else True
        assert len({r.state_hash() for r in cluster.replicas}) == 1
        assert [r.lease_expiries for r in cluster.replicas] == [expiries[0]] * 3

    copy = ReplicatedState()
    copy.load_body(cluster.replicas[0].to_body())
    assert copy.state_hash() == cluster.replicas[0].state_hash()
    assert copy.leases() == cluster.replicas[0].leases()
    assert copy.lease_expiries == expiries[0]


def test_body_without_a_lease_table_loads_with_none() -> None:
    old = ReplicatedState()
    old.apply_at(1, Command(op="update", values={"k": encode_value("k", 1)}).encode())
    body = old.to_body()
    hash_before = old.state_hash()
    del body["leases"]
    copy = ReplicatedState()
    copy.load_body(body)
    assert copy.leases() == {} and copy.snapshot() == {"k": 1}
    assert copy.state_hash() == hash_before   # an empty table leaves the hash as before


def test_expiry_deletes_every_attached_key_at_one_revision() -> None:
    cluster = Cluster()
    lease = cluster.apply(leases.grant_command(2.0))[1]
    cluster.apply(Command(op="txn", txn=txn.build(
        [], [txn.put("x", 1, lease=lease), txn.put("y", 2, lease=lease), txn.put("z", 3)], [])))
    seen: list[tuple[int, list[str]]] = []

    class Sink:
        def changed(self, revision: int, changes: Any) -> None:
            seen.append((revision, [c.key for c in changes if c.type == "delete"]))

        def reset(self, *_: Any) -> None: ...

        def export(self) -> list:
            return []

    cluster.replicas[1].add_change_listener(Sink())
    cluster.now = 1.99
    assert cluster.expirers[0].run_once() == []
    cluster.now = 2.0
    assert cluster.expirers[0].run_once() == [lease]
    assert seen == [(2, ["x", "y"])]
    assert cluster.replicas[1].snapshot() == {"z": 3}


def test_malformed_lease_commands_change_nothing() -> None:
    replica = ReplicatedState()
    assert replica.apply_at(1, Command(op="lease_grant").encode())[0] == "invalid"
    bad_ttl = Command(op="lease_grant", values={"ttl": b"\xc0"})
    assert replica.apply_at(2, bad_ttl.encode())[0] == "invalid"
    assert replica.apply_at(3, Command(op="lease_keepalive").encode())[0] == "invalid"
    assert replica.leases() == {}
