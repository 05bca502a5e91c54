"""Timing profiles: PySyncObj timeouts and the leader lease, chosen by network round trip.

Why these numbers (see docs/architecture.md): a heartbeat (``append_entries_period``) must
arrive several times within the minimum election timeout even with one RTT of delay, so a
healthy leader is never deposed; the election timeout range is wide (x2) so split votes are
rare; the leader lease is a fraction of the minimum election timeout, measured from when the
lease ping was *sent*, so an isolated leader stops acting before any follower may even
start an election.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimingProfile:
    """Raft and lease timing for one class of network."""

    name: str
    max_rtt: float                 # the largest round trip this profile is built for (s)
    append_entries_period: float   # idle heartbeat interval (s)
    min_timeout: float             # minimum election timeout (s)
    max_timeout: float             # maximum election timeout (s)
    connection_timeout: float      # TCP connect/idle timeout (s)
    lease_ratio: float = 0.75      # lease = lease_ratio * min_timeout, from ping send time
    clock_drift: float = 0.01      # tolerated relative clock-rate difference between nodes

    @property
    def lease_duration(self) -> float:
        """How long a majority's ping acknowledgement keeps this node the acting leader."""
        return self.min_timeout * self.lease_ratio * (1.0 - self.clock_drift)

    @property
    def failover_bound(self) -> float:
        """Time from leader death to a new leader with a lease when one election decides.

        A split vote (two survivors time out together) costs up to one more
        ``max_timeout`` per extra round; hastate has no pre-vote to randomise it away.
        """
        return self.max_timeout + 2 * self.max_rtt + self.append_entries_period


PROFILES: dict[str, TimingProfile] = {
    # Same region / LAN, RTT < 5 ms: fast failover, heartbeats every 50 ms.
    "lan": TimingProfile("lan", max_rtt=0.005, append_entries_period=0.05,
                         min_timeout=0.6, max_timeout=1.2, connection_timeout=1.5),
    # Three regions, RTT up to ~250 ms: heartbeat 100 ms (>= 10 per min timeout), election
    # timeout 1.5-3 s so one slow round trip never triggers an election.
    "multi-region": TimingProfile("multi-region", max_rtt=0.25, append_entries_period=0.1,
                                  min_timeout=1.5, max_timeout=3.0, connection_timeout=3.5),
}


def get_profile(name: str) -> TimingProfile:
    """Return the named profile; KeyError lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
