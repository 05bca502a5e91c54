"""The cluster counts each lease expiry once, when its expire entry applies: a retried or
duplicated expire, a stale one, a revoke, a replay after a restart and a dump count nothing
twice (what ``hastate_lease_expiries_total`` reports)."""

from __future__ import annotations

from hastate.state import leases
from hastate.state.codec import Command, encode_value
from hastate.state.machine import ReplicatedState


class Log:
    """The commands of one log, applied at consecutive indexes to replicas on demand."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []

    def append(self, command: Command, client: bytes = b"", seq: int = 0) -> None:
        self.entries.append(Command(op=command.op, client=client, seq=seq,
                                    values=command.values, keys=command.keys,
                                    expected=command.expected).encode())

    def replay(self, replica: ReplicatedState, start: int = 0,
               stop: int | None = None) -> list[tuple]:
        """Apply entries ``start`` (0-based) up to ``stop`` (excluded) at their indexes."""
        return [replica.apply_at(i + 1, raw) for i, raw in enumerate(self.entries)
                if start <= i < (len(self.entries) if stop is None else stop)]


def test_each_expiry_counts_once_whatever_is_retried_replayed_or_dumped() -> None:
    log = Log()
    log.append(leases.grant_command(1.0))                                  # lease 1
    log.append(leases.grant_command(1.0))                                  # lease 2
    log.append(leases.grant_command(1.0))                                  # lease 3
    log.append(Command(op="update", values={"k": encode_value("k", 1)}))
    log.append(leases.keepalive_command(2))                                # refreshed = 5
    log.append(leases.expire_command([(1, 1), (2, 2)]), b"leader", 7)     # 2 was refreshed
    log.append(leases.expire_command([(1, 1), (2, 2)]), b"leader", 7)     # retried proposal
    log.append(leases.expire_command([(1, 1)]), b"old-leader", 1)         # already ended
    log.append(leases.revoke_command(3))                                   # not an expiry
    log.append(leases.expire_command([(2, 5)]), b"leader", 8)
    replica = ReplicatedState()
    results = log.replay(replica)
    assert results[5] == results[6] == ("lease_end", [1], 1)              # one apply, one reply
    assert results[7][:2] == ("lease_end", []) and results[9][:2] == ("lease_end", [2])
    assert replica.lease_expiries == 2

    # a node restarting from a dump taken mid-log replays the tail: the same count
    partial = ReplicatedState()
    log.replay(partial, stop=7)
    assert partial.lease_expiries == 1
    restarted = ReplicatedState()
    restarted.load_body(partial.to_body())
    log.replay(restarted, start=7)
    assert restarted.lease_expiries == 2
    assert restarted.state_hash() == replica.state_hash()

    fresh = ReplicatedState()                                              # and from scratch
    log.replay(fresh)
    assert fresh.lease_expiries == 2 and fresh.state_hash() == replica.state_hash()


def test_the_count_is_part_of_the_state_and_older_bodies_load_with_zero() -> None:
    replica = ReplicatedState()
    replica.apply_at(1, leases.grant_command(1.0).encode())
    before = replica.state_hash()
    body = replica.to_body()
    replica.apply_at(2, leases.expire_command([(1, 1)]).encode())
    assert replica.lease_expiries == 1 and replica.state_hash() != before
    del body["lease_expiries"]                              # written before the count
    old = ReplicatedState()
    old.load_body(body)
    assert old.lease_expiries == 0 and old.state_hash() == before
