"""Lock table in the state machine (pure, fake clock) and the Lock recipe over a fake manager."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import msgpack
import pytest
from hypothesis import example, given, settings, strategies as st

from hastate.errors import LockHeldError, LockLostError, WriteTimeoutError
from hastate.recipes.lock import Lock, LockGrant
from hastate.state.codec import Command, encode_value
from hastate.state.machine import LOCK_MAX_SKEW, ReplicatedState

S = LOCK_MAX_SKEW


class Replica:
    """A ReplicatedState fed at consecutive log indexes (as Raft would)."""

    def __init__(self) -> None:
        self.machine = ReplicatedState()
        self.index = 0

    def apply(self, cmd: Command) -> tuple:
        self.index += 1
        return self.machine.apply_at(self.index, cmd.encode())

    def acquire(self, owner: str, now: float, ttl: float = 10.0, name: str = "L") -> tuple:
        return self.apply(Command.lock("lock_acquire", name, owner, ttl=ttl, now=now))

    def renew(self, owner: str, token: int, now: float, ttl: float = 10.0,
              name: str = "L") -> tuple:
        return self.apply(Command.lock("lock_renew", name, owner, ttl=ttl, now=now, token=token))

    def release(self, owner: str, token: int, name: str = "L") -> tuple:
        return self.apply(Command.lock("lock_release", name, owner, token=token))


# -- the machine --------------------------------------------------------------------------


class TestLockMachine:
    def test_free_lock_is_granted_with_the_log_index_as_token(self) -> None:
        r = Replica()
        r.apply(Command(op="update", values={"x": encode_value("x", 1)}))
        assert r.acquire("a", now=100.0) == ("lock", True, 2, "a", 110.0)
        assert r.machine.locks() == {"L": ("a", 2, 110.0)}

    def test_held_lock_is_refused_naming_owner_and_expiry(self) -> None:
        r = Replica()
        r.acquire("a", now=100.0)
        assert r.acquire("b", now=105.0) == ("lock", False, 1, "a", 110.0)
        assert r.machine.locks()["L"] == ("a", 1, 110.0)

    def test_takeover_waits_for_expiry_plus_max_skew(self) -> None:
        r = Replica()
        r.acquire("a", now=100.0)
        assert r.acquire("b", now=110.0)[1] is False               # expired, inside the skew
        assert r.acquire("b", now=110.0 + S - 1e-6)[1] is False
        granted = r.acquire("b", now=110.0 + S)
        assert granted[:2] == ("lock", True) and granted[2] == r.index > 1
        assert granted[3] == "b" and granted[4] == 110.0 + S + 10.0

    def test_same_owner_reacquire_keeps_token_and_extends(self) -> None:
        r = Replica()
        r.acquire("a", now=100.0)
        assert r.acquire("a", now=105.0) == ("lock", True, 1, "a", 115.0)
        assert r.acquire("a", now=50.0) == ("lock", True, 1, "a", 115.0)   # never shortens
        assert r.acquire("a", now=500.0) == ("lock", True, 1, "a", 510.0)  # lapsed, not taken

    def test_renew_keeps_token_and_needs_the_exact_grant(self) -> None:
        r = Replica()
        r.acquire("a", now=100.0)
        assert r.renew("a", 1, now=108.0, ttl=5.0) == ("lock", True, 1, "a", 113.0)
        assert r.renew("a", 1, now=90.0) == ("lock", True, 1, "a", 113.0)  # stale now: max
        assert r.renew("a", 7, now=109.0)[1] is False                     # wrong token
        assert r.renew("a", 0, now=109.0)[1] is False                     # no token
        assert r.renew("b", 1, now=109.0) == ("lock", False, 1, "a", 113.0)
        assert r.renew("a", 1, now=112.0, ttl=1.0) == ("lock", True, 1, "a", 113.0)

    def test_renew_after_takeover_is_refused(self) -> None:
        r = Replica()
        r.acquire("a", now=100.0, ttl=1.0)
        _, _, token_b, _, _ = r.acquire("b", now=101.0 + S)
        assert r.renew("a", 1, now=102.5) == ("lock", False, token_b, "b", 111.0 + S)

    def test_release_frees_only_the_holders_grant(self) -> None:
        r = Replica()
        r.acquire("a", now=100.0)
        assert r.release("b", 1) == ("lock", False, 1, "a", 110.0)         # not the owner
        assert r.release("a", 99) == ("lock", False, 1, "a", 110.0)        # stale token
        assert r.release("a", 1) == ("lock", True, 1, "a", 110.0)
        assert r.machine.locks() == {}
        assert r.release("a", 1) == ("lock", False, 0, "", 0.0)            # idempotent
        assert r.renew("a", 1, now=101.0)[1] is False                      # gone
        assert r.acquire("b", now=101.0)[1:3] == (True, r.index)           # free at once

    def test_release_with_token_zero_frees_whatever_the_owner_holds(self) -> None:
        r = Replica()
        r.acquire("a", now=100.0)
        assert r.release("b", 0)[1] is False
        assert r.release("a", 0)[1] is True and r.machine.locks() == {}

    def test_tokens_strictly_increase_across_grants_and_locks(self) -> None:
        r = Replica()
        tokens = []
        for i, owner in enumerate("abcabc"):
            now = 100.0 + i * (2.0 + S)
            res = r.acquire(owner, now=now, ttl=1.0, name="L" if i % 2 else "M")
            assert res[1] is True
            tokens.append(res[2])
            r.apply(Command(op="barrier"))
        assert tokens == sorted(set(tokens)) and len(tokens) == 6

    def test_locks_are_independent_by_name(self) -> None:
        r = Replica()
        assert r.acquire("a", now=1.0, name="x")[1] and r.acquire("b", now=1.0, name="y")[1]
        assert r.acquire("b", now=2.0, name="x")[1] is False

    def test_malformed_lock_command_is_invalid_and_changes_nothing(self) -> None:
        r = Replica()
        r.acquire("a", now=1.0)
        before = r.machine.state_hash()
        for bad in (Command(op="lock_acquire"),
                    Command(op="lock_acquire", keys=("L",), values={"owner": b"b"}),
                    Command(op="lock_renew", keys=("L", "M"), values={"owner": b"a",
                            "ttl": msgpack.packb(1.0), "now": msgpack.packb(1.0)}),
                    Command(op="lock_acquire", keys=("L",), values={"owner": b"b",
                            "ttl": msgpack.packb("x"), "now": msgpack.packb(1.0)}),
                    Command(op="lock_acquire", keys=("L",), values={"owner": b"b",
                            "ttl": msgpack.packb(-5.0), "now": msgpack.packb(99.0)}),
                    Command(op="lock_release", keys=("L",), values={"owner": b"\xff",
                            "ttl": b"\xc1", "now": b""})):
            assert r.apply(bad)[0] == "invalid"
        assert r.machine.state_hash() == before

    @pytest.mark.parametrize("kwargs", [dict(name="", owner="a"), dict(name="L", owner=""),
                                        dict(name="L", owner="a", ttl=0.0),
                                        dict(name="L", owner="a", ttl=float("inf")),
                                        dict(name="L", owner="a", now=float("nan")),
                                        dict(name="L", owner="a", token=-1)])
    def test_command_builder_refuses_bad_arguments(self, kwargs: dict) -> None:
        kwargs = {"ttl": 1.0, "now": 1.0, **kwargs}
        with pytest.raises(ValueError):
            Command.lock("lock_acquire", **kwargs)
        with pytest.raises(ValueError, match="not a lock op"):
            Command.lock("update", "L", "a")

    def test_retried_proposal_returns_the_first_grant(self) -> None:
        r = Replica()
        cmd = Command.lock("lock_acquire", "L", "a", ttl=5.0, now=100.0)
        cmd = Command(op=cmd.op, client=b"c", seq=1, values=cmd.values, keys=cmd.keys,
                      expected=cmd.expected)
        first = r.apply(cmd)
        r.release("a", first[2])
        r.acquire("b", now=101.0)
        assert r.apply(cmd) == first                   # deduplicated: b keeps the lock
        assert r.machine.locks()["L"][0] == "b"

    def test_capture_body_load_body_round_trip_carries_locks(self) -> None:
        r = Replica()
        r.acquire("a", now=100.0, name="x")
        r.acquire("b", now=100.5, ttl=2.5, name="y")
        body = msgpack.unpackb(msgpack.packb(r.machine.capture().body(), use_bin_type=True),
                               raw=False, strict_map_key=False)
        other = ReplicatedState()
        other.load_body(body)
        assert other.locks() == r.machine.locks() == {"x": ("a", 1, 110.0),
                                                      "y": ("b", 2, 103.0)}
        assert other.state_hash() == r.machine.state_hash()
        # the restored replica decides like the original
        nxt = Command.lock("lock_acquire", "x", "c", ttl=1.0, now=111.0 + S)
        assert other.apply_at(3, nxt.encode()) == r.machine.apply_at(3, nxt.encode())
        assert other.locks() == r.machine.locks()

    def test_body_without_lock_table_loads_with_no_locks(self) -> None:
        r = Replica()
        r.apply(Command(op="update", values={"k": encode_value("k", 1)}))
        old_body = r.machine.to_body()
        del old_body["locks"]                          # as written before locks existed
        other = ReplicatedState()
        other.load_body(old_body)
        assert other.locks() == {} and other.snapshot() == {"k": 1}
        assert other.state_hash() == r.machine.state_hash()   # hash unchanged without locks
        r.acquire("a", now=1.0)
        assert r.machine.state_hash() != other.state_hash()


# -- model checks ---------------------------------------------------------------------------

OWNERS = ("a", "b", "c")
steps = st.lists(st.tuples(st.sampled_from(OWNERS),
                           st.sampled_from(["acquire", "acquire", "renew", "release"]),
                           # true time advances by (multiples of S/4 hit the edge cases)
                           st.one_of(st.sampled_from([0.0, S / 4, S / 2, S]), st.floats(0, 4)),
                           # the command's clock reading is stale by (delayed proposal)
                           st.one_of(st.just(0.0), st.floats(0.0, 2.0)),
                           st.sampled_from([S / 2, S, 3 * S])),
                 max_size=40)
# each owner's clock offset from true time: pairwise within LOCK_MAX_SKEW (extremes likelier)
clock_offset = st.one_of(st.sampled_from([-S / 2, S / 2]), st.floats(-S / 2, S / 2))


@settings(max_examples=400, deadline=None)
@given(steps, st.lists(clock_offset, min_size=3, max_size=3))
# b's clock runs S ahead of a's: a takeover must wait until a's own clock says it expired
@example([("a", "acquire", 0.0, 0.0, S), ("b", "acquire", S / 2, 0.0, S)], [-S / 2, S / 2, 0.0])
@example([("a", "acquire", 0.0, 0.0, S), ("b", "acquire", S, 0.0, S)], [-S / 2, S / 2, 0.0])
def test_no_two_owners_hold_unexpired_grants_at_the_same_time(seq: list, offsets: list) -> None:
    """Clocks within LOCK_MAX_SKEW of each other: holding intervals of owners never overlap.

    Each owner's clock is true time + its offset (pairwise within the skew); it holds from
    when it learns of a grant until the expiry the machine returned (on its own clock),
    cut short when it releases or learns the lock is gone.
    """
    r, twin = Replica(), Replica()
    offset = dict(zip(OWNERS, offsets))
    held: dict[str, int] = {}                                   # owner -> token it holds
    intervals: dict[str, list[list[float]]] = {o: [] for o in OWNERS}
    highest = 0
    true_t = 1000.0
    for owner, op, dt, lag, ttl in seq:
        true_t += dt
        now = true_t + offset[owner] - lag
        if op == "acquire":
            cmd = Command.lock("lock_acquire", "L", owner, ttl=ttl, now=now)
        elif op == "renew":
            cmd = Command.lock("lock_renew", "L", owner, ttl=ttl, now=now,
                               token=held.get(owner, 0))
        else:
            cmd = Command.lock("lock_release", "L", owner, token=held.get(owner, 0))
        result = r.apply(cmd)
        assert twin.apply(cmd) == result                        # deterministic
        _, granted, token, holder, expires_at = result
        if granted and op != "release":
            if token != held.get(owner):                        # a new grant:
                assert token == r.index and token > highest     # fresh, larger token
                highest = token
            held[owner] = token
            intervals[owner].append([true_t, expires_at - offset[owner]])
        else:                                                   # released, or learned it lost
            held.pop(owner, None)
            for iv in intervals[owner]:
                iv[1] = min(iv[1], true_t)
    for i, a in enumerate(OWNERS):
        for b in OWNERS[i + 1:]:
            for s1, e1 in intervals[a]:
                for s2, e2 in intervals[b]:
                    assert e1 <= s2 or e2 <= s1 or s1 >= e1 or s2 >= e2, \
                        (a, (s1, e1), b, (s2, e2))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OWNERS),
                          st.sampled_from(["lock_acquire", "lock_renew", "lock_release"]),
                          st.floats(-1e6, 1e6), st.sampled_from([0.5, 2.0]),
                          st.integers(0, 40)), max_size=60))
def test_any_clock_readings_hand_over_only_after_expiry_plus_skew(seq: list) -> None:
    """Whatever ``now`` values arrive: a lock changes owner only when free or when the new
    owner's ``now`` is past the previous expiry + skew, and new grants get larger tokens."""
    r = Replica()
    highest = 0
    for owner, op, now, ttl, token in seq:
        before = r.machine.locks().get("L")
        result = r.apply(Command.lock(op, "L", owner, ttl=ttl, now=now, token=token))
        after = r.machine.locks().get("L")
        if after is not None and (before is None or after[1] != before[1]):
            assert op == "lock_acquire" and result[1] and after[1] == r.index > highest
            highest = after[1]
            assert before is None or now >= before[2] + S
        if before is not None and after is not None:
            assert after[0] == before[0] or now >= before[2] + S
            if after[0] == before[0]:
                assert after[1] == before[1] and after[2] >= before[2]
        if before is not None and after is None:
            assert op == "lock_release" and owner == before[0] and token in (0, before[1])


# -- the recipe over a fake manager ---------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeManager:
    """The parts of StateManager a Lock uses, applying to one local replica."""

    def __init__(self, instance_id: str = "instance-1") -> None:
        self.instance_id = instance_id
        self.write_timeout = 5.0
        self.replica = Replica()
        self.machine = self.replica.machine
        self.fail = False
        self.writes: list[str] = []
        self._mutex = threading.Lock()

    def propose(self, command: Command, timeout: float | None = None) -> tuple:
        with self._mutex:
            self.writes.append(command.op)
            if self.fail:
                raise WriteTimeoutError("injected", outcome_unknown=False)
            return self.replica.apply(command)


class TestLockRecipe:
    def test_two_locks_in_one_process_contend(self) -> None:
        sm, clock = FakeManager(), FakeClock()
        a = Lock(sm, "L", ttl=5.0, clock=clock, sleep=clock.sleep)
        b = Lock(sm, "L", ttl=5.0, clock=clock, sleep=clock.sleep)
        assert a.owner != b.owner and a.owner.startswith("instance-1/")
        grant = a.acquire()
        assert grant == LockGrant(1, a.owner, 1005.0) and a.token == 1 and a.is_held()
        with pytest.raises(LockHeldError) as info:
            b.acquire(blocking=False)
        assert info.value.owner == a.owner and info.value.expires_at == 1005.0
        assert b.token is None and b.holder() == grant

    def test_blocking_acquire_waits_out_expiry_and_skew_in_the_local_table(self) -> None:
        sm, clock = FakeManager(), FakeClock()
        a = Lock(sm, "L", ttl=5.0, clock=clock, sleep=clock.sleep)
        b = Lock(sm, "L", ttl=5.0, clock=clock, sleep=clock.sleep)
        first = a.acquire()
        second = b.acquire(timeout=30)
        assert second.token > first.token and second.owner == b.owner
        assert clock.now >= first.expires_at + S
        assert sm.writes.count("lock_acquire") <= 2 + int((5 + S) / 1.0) + 1   # waits locally
        assert a.token is None                                # expired on a's clock
        with pytest.raises(LockLostError):
            a.renew()
        assert a.lost and a.release() is False                # does not free b's grant
        assert sm.machine.locks()["L"][0] == b.owner

    def test_blocking_acquire_times_out_naming_the_holder(self) -> None:
        sm, clock = FakeManager(), FakeClock()
        a = Lock(sm, "L", ttl=60.0, clock=clock, sleep=clock.sleep)
        a.acquire()
        b = Lock(sm, "L", clock=clock, sleep=clock.sleep)
        with pytest.raises(LockHeldError, match="after waiting") as info:
            b.acquire(timeout=2.0)
        assert info.value.owner == a.owner and 2.0 <= clock.now - 1000.0 < 2.5

    def test_renew_release_and_context_manager(self) -> None:
        sm, clock = FakeManager(), FakeClock()
        lock = Lock(sm, "L", ttl=5.0, clock=clock, sleep=clock.sleep)
        with lock as grant:
            clock.now += 3
            renewed = lock.renew()
            assert renewed.token == grant.token and renewed.expires_at == 1008.0
        assert sm.machine.locks() == {} and lock.token is None
        assert lock.release() is False                        # nothing held, nothing sent
        assert sm.writes == ["lock_acquire", "lock_renew", "lock_release"]
        again = lock.acquire()
        assert again.token > grant.token

    def test_acquire_is_idempotent_for_the_same_lock(self) -> None:
        sm, clock = FakeManager(), FakeClock()
        lock = Lock(sm, "L", ttl=5.0, clock=clock, sleep=clock.sleep)
        first = lock.acquire()
        clock.now += 1
        assert lock.acquire(blocking=False).token == first.token

    def test_auto_renew_keeps_the_grant_alive(self) -> None:
        sm = FakeManager()
        lost: list[LockGrant] = []
        lock = Lock(sm, "L", ttl=0.3, auto_renew=True, on_lost=lost.append)
        grant = lock.acquire()
        time.sleep(1.0)
        assert lock.token == grant.token and not lost and sm.writes.count("lock_renew") >= 2
        lock.release()
        assert sm.machine.locks() == {}
        time.sleep(0.3)
        assert not lost

    def test_auto_renew_failure_marks_lost_and_calls_on_lost_once(self) -> None:
        sm = FakeManager()
        lost: list[LockGrant] = []
        done = threading.Event()
        lock = Lock(sm, "L", ttl=0.3, auto_renew=True,
                    on_lost=lambda g: (lost.append(g), done.set()))
        grant = lock.acquire()
        sm.fail = True
        assert done.wait(2.0)
        assert lost == [grant] and lock.lost and lock.token is None
        with pytest.raises(LockLostError):
            lock.renew()
        time.sleep(0.2)
        assert lost == [grant]

    def test_auto_renew_after_takeover_reports_loss(self) -> None:
        sm = FakeManager()
        done = threading.Event()
        lock = Lock(sm, "L", ttl=0.3, auto_renew=True, on_lost=lambda g: done.set())
        lock.acquire()
        sm.replica.release(lock.owner, 0)                        # e.g. an operator freed it
        sm.replica.acquire("intruder", now=time.time())
        assert done.wait(2.0) and lock.lost

    def test_write_errors_propagate_from_non_blocking_acquire(self) -> None:
        sm, clock = FakeManager(), FakeClock()
        sm.fail = True
        lock = Lock(sm, "L", clock=clock, sleep=clock.sleep)
        with pytest.raises(WriteTimeoutError):
            lock.acquire(blocking=False)
        with pytest.raises(WriteTimeoutError):
            lock.acquire(timeout=1.0)                             # retried, then raised

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError):
            Lock(FakeManager(), "")
        with pytest.raises(ValueError):
            Lock(FakeManager(), "L", ttl=0)


def test_manager_factory_binds_lock() -> None:
    from hastate.manager import StateManager
    sm = SimpleNamespace(instance_id="i", write_timeout=1.0)
    lock = StateManager.lock(sm, "L", 3.0, auto_renew=True)   # type: ignore[arg-type]
    assert isinstance(lock, Lock) and lock.manager is sm and lock.ttl == 3.0 and lock.auto_renew
