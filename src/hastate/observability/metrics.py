"""Prometheus metrics for one node, all collectors in one place, names prefixed ``hastate_``.

Gauges are read from ``StateManager.status()`` when Prometheus scrapes, so the write path
pays only for one histogram observation per proposal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

if TYPE_CHECKING:
    from hastate.manager import StateManager

ROLES = ("leader", "leader-without-lease", "follower", "candidate")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _StatusCollector:
    """Turns status() into gauges at scrape time."""

    def __init__(self, manager: "StateManager") -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        st = self._manager.status()
        node = st["id"]

        def gauge(name: str, doc: str, value: float | None, **labels: str) -> Metric:
            g = GaugeMetricFamily(name, doc, labels=["node", *labels])
            g.add_metric([node, *labels.values()], float(value if value is not None else 0))
            return g

        role = GaugeMetricFamily("hastate_role", "1 for the role this node is in",
                                 labels=["node", "region", "role"])
        for r in ROLES:
            role.add_metric([node, st["region"], r], 1.0 if st["role"] == r else 0.0)
        yield role
        yield gauge("hastate_is_leader", "1 while this node leads and holds its lease",
                    st["is_leader"])
        yield gauge("hastate_term", "Current Raft term", st["term"])
        yield gauge("hastate_commit_index", "Highest log index known committed",
                    st["commit_index"])
        yield gauge("hastate_applied_index", "Highest log index applied to the state",
                    st["applied_index"])
        yield gauge("hastate_log_entries", "Entries held in the Raft journal", st["log_entries"])
        yield gauge("hastate_keys", "Top-level keys in the replicated state", st["keys"])
        yield gauge("hastate_lease_remaining_seconds", "Leader lease time left",
                    st["lease_remaining"])
        yield gauge("hastate_healthy", "1 when the last health check passed", st["healthy"])
        changes = CounterMetricFamily("hastate_leader_changes", "Leader changes seen",
                                      labels=["node"])
        changes.add_metric([node], st["leader_changes"])
        yield changes
        connected = GaugeMetricFamily("hastate_peer_connected", "1 when the peer is connected",
                                      labels=["node", "peer"])
        lag = GaugeMetricFamily("hastate_peer_lag_entries",
                                "Leader only: entries the peer is behind the leader's log",
                                labels=["node", "peer"])
        contact = GaugeMetricFamily("hastate_peer_last_contact_seconds",
                                    "Leader only: seconds since the peer last answered",
                                    labels=["node", "peer"])
        for peer, info in st["peers"].items():
            connected.add_metric([node, peer], 1.0 if info["connected"] else 0.0)
            if info["match_index"] is not None:
                lag.add_metric([node, peer], st["last_log_index"] - info["match_index"])
            if info["last_contact_age"] is not None:
                contact.add_metric([node, peer], info["last_contact_age"])
        yield connected
        yield lag
        yield contact


class NodeMetrics:
    """The registry for one node: scrape-time gauges plus proposal counters."""

    def __init__(self, manager: "StateManager") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StatusCollector(manager))
        self.proposal_seconds = Histogram(
            "hastate_proposal_seconds", "Time from proposal to applied on this node",
            ["op"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.proposals = Counter("hastate_proposals", "Proposals by operation",
                                 ["op"], registry=self.registry)
        manager.proposal_observers.append(self.observe)

    def observe(self, op: str, seconds: float) -> None:
        """Record one completed proposal."""
        self.proposal_seconds.labels(op).observe(seconds)
        self.proposals.labels(op).inc()

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
