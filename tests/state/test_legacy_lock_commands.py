"""The lock commands of older versions still apply exactly as they did (pure, fake clock).

Nothing proposes ``lock_acquire``/``lock_renew``/``lock_release``/``lock_purge`` any more
(the lock recipe runs on leases and transactions), but journals and snapshots written by
older versions hold them: replaying them must give the same lock table, results and state
hash as before. The commands are built here in their old wire form.
"""

from __future__ import annotations

import msgpack
from hypothesis import example, given, settings, strategies as st

from hastate.state.codec import Command, encode_value
from hastate.state.machine import LOCK_MAX_SKEW, ReplicatedState

S = LOCK_MAX_SKEW


def lock_command(op: str, name: str, owner: str, *, ttl: float = 0.0, now: float = 0.0,
                 token: int = 0) -> Command:
    """A lock command as older versions proposed it."""
    return Command(op=op, keys=(name,),
                   values={"owner": owner.encode(), "ttl": msgpack.packb(float(ttl)),
                           "now": msgpack.packb(float(now))},
                   expected={"token": int(token)})


def purge_command(now: float) -> Command:
    """The older versions' janitor command: drop the entries expired at ``now``."""
    return Command(op="lock_purge", values={"now": msgpack.packb(float(now))})


class Replica:
    """A ReplicatedState fed at consecutive log indexes (as Raft would)."""

    def __init__(self) -> None:
        self.machine = ReplicatedState()
        self.index = 0

    def apply(self, cmd: Command) -> tuple:
        self.index += 1
        return self.machine.apply_at(self.index, cmd.encode())

    def acquire(self, owner: str, now: float, ttl: float = 10.0, name: str = "L") -> tuple:
        return self.apply(lock_command("lock_acquire", name, owner, ttl=ttl, now=now))

    def renew(self, owner: str, token: int, now: float, ttl: float = 10.0,
              name: str = "L") -> tuple:
        return self.apply(lock_command("lock_renew", name, owner, ttl=ttl, now=now, token=token))

    def release(self, owner: str, token: int, name: str = "L") -> tuple:
        return self.apply(lock_command("lock_release", name, owner, token=token))


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

    def test_retried_proposal_returns_the_first_grant(self) -> None:
        r = Replica()
        cmd = lock_command("lock_acquire", "L", "a", ttl=5.0, now=100.0)
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
        nxt = lock_command("lock_acquire", "x", "c", ttl=1.0, now=111.0 + S)
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
            cmd = lock_command("lock_acquire", "L", owner, ttl=ttl, now=now)
        elif op == "renew":
            cmd = lock_command("lock_renew", "L", owner, ttl=ttl, now=now,
                               token=held.get(owner, 0))
        else:
            cmd = lock_command("lock_release", "L", owner, token=held.get(owner, 0))
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
        result = r.apply(lock_command(op, "L", owner, ttl=ttl, now=now, token=token))
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


# -- the janitor's purge ----------------------------------------------------------------------


def test_purge_drops_only_entries_expired_past_the_skew_and_replicas_agree() -> None:
    r, twin = Replica(), Replica()
    for replica in (r, twin):
        replica.apply(lock_command("lock_acquire", "old", "a", ttl=5.0, now=100.0))
        replica.apply(lock_command("lock_acquire", "fresh", "b", ttl=50.0, now=100.0))
    assert r.apply(purge_command(105.5)) == twin.apply(purge_command(105.5)) == ("purged", [])
    assert r.apply(purge_command(106.0)) == twin.apply(purge_command(106.0)) == \
        ("purged", ["old"])
    assert set(r.machine.locks()) == {"fresh"}
    assert r.machine.state_hash() == twin.machine.state_hash()
    assert r.apply(Command(op="lock_purge", values={}))[0] == "invalid"


def test_lock_commands_leave_the_revision_and_the_keys_alone() -> None:
    r = Replica()
    r.apply(Command(op="update", values={"k": encode_value("k", 1)}))
    before = (r.machine.revision, r.machine.snapshot())
    r.acquire("a", now=1.0)
    r.renew("a", 2, now=2.0)
    r.apply(purge_command(50.0))
    assert (r.machine.revision, r.machine.snapshot()) == before


def test_an_older_journal_replays_to_the_results_and_hash_the_older_version_gave() -> None:
    """Golden values computed by the version that still proposed these commands."""
    journal = [lock_command("lock_acquire", "L", "a", ttl=5, now=100),
               Command(op="update", values={"k": encode_value("k", 1)}),
               lock_command("lock_acquire", "L", "b", ttl=5, now=103),
               lock_command("lock_renew", "L", "a", ttl=5, now=104, token=1),
               lock_command("lock_acquire", "M", "b", ttl=2, now=104),
               purge_command(107.5),
               lock_command("lock_acquire", "L", "b", ttl=5, now=110.5),
               lock_command("lock_release", "L", "a", token=1),
               lock_command("lock_release", "L", "b", token=7),
               lock_command("lock_acquire", "N", "c", ttl=9, now=111)]
    r = Replica()
    assert [r.apply(command) for command in journal] == [
        ("lock", True, 1, "a", 105.0), ("ok", 1, 2), ("lock", False, 1, "a", 105.0),
        ("lock", True, 1, "a", 109.0), ("lock", True, 5, "b", 106.0), ("purged", ["M"]),
        ("lock", True, 7, "b", 115.5), ("lock", False, 7, "b", 115.5),
        ("lock", True, 7, "b", 115.5), ("lock", True, 10, "c", 120.0)]
    assert r.machine.locks() == {"N": ("c", 10, 120.0)}
    assert r.machine.state_hash() == \
        "95107b5a4d0efb6c203a5dabb6d594c64d3c76990fe22bc044b62954c9e4d0b6"
