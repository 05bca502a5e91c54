"""Expired lock entries are purged through the log by the leader's janitor (fake clock)."""

from __future__ import annotations

from hastate.state.codec import Command
from hastate.state.housekeeping import LockJanitor
from hastate.state.machine import LOCK_MAX_SKEW, ReplicatedState


class Log:
    """Two replicas fed the same commands at consecutive indexes."""

    def __init__(self) -> None:
        self.replicas = [ReplicatedState(), ReplicatedState()]
        self.index = 0
        self.proposed: list[Command] = []

    def propose(self, command: Command) -> tuple:
        self.proposed.append(command)
        self.index += 1
        results = [r.apply_at(self.index, command.encode()) for r in self.replicas]
        assert results[0] == results[1]
        return results[0]


def test_leader_purges_only_expired_entries_and_replicas_agree() -> None:
    log = Log()
    log.propose(Command.lock("lock_acquire", "old", "a", ttl=5.0, now=100.0))
    log.propose(Command.lock("lock_acquire", "fresh", "b", ttl=50.0, now=100.0))
    now = [104.0]
    leader = [True]
    janitor = LockJanitor(log.replicas[0], is_leader=lambda: leader[0], propose=log.propose,
                          clock=lambda: now[0])
    assert janitor.run_once() == [] and len(log.proposed) == 2       # nothing expired: no entry
    now[0] = 105.0 + LOCK_MAX_SKEW
    leader[0] = False
    assert janitor.run_once() == [] and len(log.proposed) == 2       # followers never propose
    leader[0] = True
    assert janitor.run_once() == ["old"]
    for replica in log.replicas:
        assert set(replica.locks()) == {"fresh"}
    assert log.replicas[0].state_hash() == log.replicas[1].state_hash()
    assert log.replicas[0].revision == 0                              # locks are not key writes
    assert janitor.purged == 1


def test_purge_decides_by_the_command_clock_not_the_replica() -> None:
    log = Log()
    log.propose(Command.lock("lock_acquire", "L", "a", ttl=5.0, now=100.0))
    assert log.propose(Command.purge_locks(105.5)) == ("purged", [])   # within the skew
    assert log.propose(Command.purge_locks(106.0)) == ("purged", ["L"])
    assert log.propose(Command(op="lock_purge", values={}))[0] == "invalid"
