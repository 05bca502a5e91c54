"""Prometheus metrics for one node, all collectors in one place, names prefixed ``hastate_``.

Gauges and counters owned by other layers are read when Prometheus scrapes (from
``StateManager.status()`` and :mod:`hastate.observability.stats`), so the write path pays
only for one histogram observation and one counter increment per proposal. Every metric is
documented in docs/metrics.md; a test checks the dashboards and alert rules against a real
scrape, so rename nothing without updating them. Every family comes from the engine-neutral
status; the embedded Raft engine's own ones (log indexes, elections, journal fsyncs) appear
only on nodes that run it.
"""

from __future__ import annotations

import functools

from typing import Any, Callable, Iterator, Protocol

from prometheus_client import (CollectorRegistry, Counter, Histogram, PlatformCollector,
                               ProcessCollector)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.exposition import generate_latest

from hastate.observability import stats as stats_mod


class Measured(Protocol):
    """What the metrics read of a node's manager (``StateManager`` has it)."""

    instance_id: str
    engine: Any
    proposal_observers: list[Callable[[str, float, str], None]]

    def status(self) -> dict[str, Any]:
        """The node's status document."""

ROLES = ("leader", "leader-without-lease", "follower", "candidate")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: ``result`` label values of hastate_proposals_total (see StateManager.proposal_observers).
PROPOSAL_RESULTS = ("ok", "conflict", "no_quorum", "timeout", "overloaded", "error")
FAILOVER_REASONS = ("manual", "health")


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("hastate")
    except Exception:
        return "unknown"


def _gauge(node: str, name: str, doc: str, value: float | None) -> Metric:
    """A one-sample gauge labelled with the node (None reads as 0)."""
    g = GaugeMetricFamily(name, doc, labels=["node"])
    g.add_metric([node], float(value or 0))
    return g


def _counter(node: str, name: str, doc: str, value: float) -> Metric:
    """A one-sample counter labelled with the node."""
    c = CounterMetricFamily(name, doc, labels=["node"])
    c.add_metric([node], float(value))
    return c


class _StatusCollector:
    """Turns status() and the node's stats into metric families at scrape time."""

    def __init__(self, manager: Measured) -> None:
        self._manager = manager
        self._version = _version()

    def collect(self) -> Iterator[Metric]:
        manager = self._manager
        if not manager.engine.running:
            return  # stopped or not started: only process metrics
        st = manager.status()
        node = st["id"]
        stats = stats_mod.attach(manager)

        gauge = functools.partial(_gauge, node)
        counter = functools.partial(_counter, node)
        info = GaugeMetricFamily("hastate_info", "Always 1; labels identify the node",
                                 labels=["node", "region", "cluster", "profile", "version",
                                         "engine"])
        info.add_metric([node, st["region"], st["cluster"], st.get("profile") or "",
                         self._version, st["engine"]], 1.0)
        yield info
        role = GaugeMetricFamily("hastate_role", "1 for the role this node is in",
                                 labels=["node", "region", "role"])
        for r in (*ROLES, *([st["role"]] if st["role"] not in ROLES else [])):
            role.add_metric([node, st["region"], r], 1.0 if st["role"] == r else 0.0)
        yield role
        yield gauge("hastate_is_leader", "1 while this node leads and holds its lease",
                    st["is_leader"])
        yield gauge("hastate_term", "Current term (Raft term; other engines: their "
                    "leadership epoch)", st["term"])
        yield gauge("hastate_writes_in_flight", "Writes proposed through this node's "
                    "StateManager and not yet completed", st.get("writes_in_flight"))
        yield gauge("hastate_keys", "Top-level keys in the replicated state", st["keys"])
        yield gauge("hastate_revision", "Cluster revision applied on this node (writes that "
                    "changed something)", st["revision"])
        yield gauge("hastate_watchers", "Watchers open on this node", st["watchers"])
        yield gauge("hastate_leases", "Leases in this node's lease table", st["leases"])
        yield counter("hastate_lease_expiries", "Leases ended by expiry in the cluster, "
                      "counted once each when applied (the same on caught-up nodes)",
                      st.get("lease_expiries") or 0)
        yield gauge("hastate_lease_remaining_seconds", "Leader lease time left",
                    st.get("lease_remaining"))
        yield gauge("hastate_healthy", "1 when the last health check passed", st["healthy"])
        yield gauge("hastate_ready", "1 when a leader is known and this node applied all "
                    "it knows committed", st["ready"])
        yield gauge("hastate_voter", "1 while this node is in its own configuration (0: joining "
                    "or removed)", st.get("member", True))
        yield gauge("hastate_members", "Voters in this node's configuration", len(st["members"]))
        yield counter("hastate_leader_changes", "Leader changes seen by this node",
                      st.get("leader_changes") or 0)
        yield counter("hastate_health_check_failures", "Failed health checks on this node",
                      st.get("health_check_failures", 0))
        failovers = CounterMetricFamily("hastate_failovers",
                                        "Completed leadership transfers started on this node",
                                        labels=["node", "reason"])
        counts = st.get("failovers", {})
        for reason in sorted(set(FAILOVER_REASONS) | set(counts)):
            failovers.add_metric([node, reason], float(counts.get(reason, 0)))
        yield failovers
        yield from self._peers(node, st)
        if st["engine"] == "raft":
            yield from self._raft(node, st, stats)
        yield from self._snapshots(node, stats)

    @staticmethod
    def _raft(node: str, st: dict, stats: stats_mod.NodeStats) -> Iterator[Metric]:
        """The embedded Raft engine's own families: its log, elections and journal."""
        gauge = functools.partial(_gauge, node)
        counter = functools.partial(_counter, node)
        yield gauge("hastate_commit_index", "Highest log index known committed",
                    st["commit_index"])
        yield gauge("hastate_applied_index", "Highest log index applied to the state",
                    st["applied_index"])
        yield gauge("hastate_last_log_index", "Index of the last entry in this node's log",
                    st["last_log_index"])
        yield gauge("hastate_log_entries", "Entries held in the Raft journal", st["log_entries"])
        yield gauge("hastate_behind_leader_entries", "Committed entries (as last told by the "
                    "leader) this node has not applied yet", st["behind_leader_entries"])
        yield gauge("hastate_uncommitted_entries", "Leader only: commands appended and not yet "
                    "committed, each member of a grouped entry counted (bounded by "
                    "limits.max_uncommitted_entries)",
                    st["uncommitted_entries"])
        yield counter("hastate_elections_started", "Elections this node started (as candidate)",
                      stats.elections_started)
        yield counter("hastate_prevotes_started", "Pre-vote rounds this node started (an "
                      "election needs a majority's grant first)", st["prevotes_started"])
        yield counter("hastate_log_compactions", "Times this node compacted its Raft log",
                      stats.log_compactions)
        yield from _StatusCollector._journal(node, stats)

    @staticmethod
    def _peers(node: str, st: dict) -> Iterator[Metric]:
        connected = GaugeMetricFamily("hastate_peer_connected", "1 when the peer is connected",
                                      labels=["node", "peer"])
        match = GaugeMetricFamily("hastate_peer_match_index",
                                  "Leader only: highest log index known replicated on the peer",
                                  labels=["node", "peer"])
        lag = GaugeMetricFamily("hastate_peer_lag_entries",
                                "Leader only: entries the peer is behind the leader's log",
                                labels=["node", "peer"])
        contact = GaugeMetricFamily("hastate_peer_last_contact_seconds",
                                    "Leader only: seconds since the peer last answered",
                                    labels=["node", "peer"])
        for peer, info in st.get("peers", {}).items():
            connected.add_metric([node, peer], 1.0 if info.get("connected") else 0.0)
            if info.get("match_index") is not None:
                match.add_metric([node, peer], info["match_index"])
            if info.get("lag") is not None:
                lag.add_metric([node, peer], info["lag"])
            if info.get("last_contact_age") is not None:
                contact.add_metric([node, peer], info["last_contact_age"])
        yield connected
        yield match
        yield lag
        yield contact

    @staticmethod
    def _journal(node: str, stats: stats_mod.NodeStats) -> Iterator[Metric]:
        buckets, total = stats.journal.fsync.snapshot()
        fsync = HistogramMetricFamily("hastate_journal_fsync_seconds",
                                      "Duration of each fsync of the Raft journal",
                                      labels=["node"])
        fsync.add_metric([node], buckets, total)
        yield fsync
        journal_bytes = stats.journal_bytes()
        if journal_bytes is not None:
            yield _gauge(node, "hastate_journal_bytes", "Size of the Raft journal on disk",
                         journal_bytes)

    @staticmethod
    def _snapshots(node: str, stats: stats_mod.NodeStats) -> Iterator[Metric]:
        snap = stats.snapshot_info()
        gauge = functools.partial(_gauge, node)
        counter = functools.partial(_counter, node)

        yield gauge("hastate_snapshot_enabled", "1 when this node runs a snapshot uploader",
                    snap.enabled)
        yield gauge("hastate_snapshot_last_success_timestamp_seconds",
                    "Unix time of this node's last successful snapshot upload (0 = none)",
                    snap.last_success_at)
        yield gauge("hastate_snapshot_last_size_bytes", "Size of the last uploaded snapshot",
                    snap.last_size_bytes)
        yield gauge("hastate_snapshot_last_duration_seconds",
                    "Time the last successful snapshot upload took", snap.last_duration_s)
        yield gauge("hastate_snapshot_pending", "Snapshots queued, not yet uploaded",
                    snap.pending)
        yield counter("hastate_snapshot_uploads", "Successful snapshot uploads",
                      snap.uploads_total)
        yield counter("hastate_snapshot_failures", "Failed snapshot upload attempts",
                      snap.failures_total)
        yield counter("hastate_shipping_segments", "Log segments shipped by this node",
                      snap.shipping_segments_total)
        yield counter("hastate_shipping_failures", "Failed log segment uploads",
                      snap.shipping_failures_total)
        yield gauge("hastate_shipping_last_success_timestamp_seconds",
                    "Unix time of this node's last shipped log segment (0 = none)",
                    snap.shipping_last_success_at)
        lag = GaugeMetricFamily("hastate_shipping_lag_entries",
                                "Lease holder only: applied entries not yet shipped to the store",
                                labels=["node"])
        if snap.shipping_lag_entries is not None:
            lag.add_metric([node], snap.shipping_lag_entries)
        yield lag
        yield from _mirror_metrics(node, snap.mirrors)


def _mirror_metrics(node: str, mirrors: tuple[dict, ...]) -> Iterator[Metric]:
    """Per-mirror upload and shipping health, labelled with the mirror's store URL."""
    families = [
        (CounterMetricFamily, "hastate_snapshot_mirror_uploads",
         "Successful snapshot uploads to a mirror store", lambda m: m["uploads_total"]),
        (CounterMetricFamily, "hastate_snapshot_mirror_failures",
         "Failed snapshot upload attempts to a mirror store", lambda m: m["failures_total"]),
        (GaugeMetricFamily, "hastate_snapshot_mirror_last_success_timestamp_seconds",
         "Unix time of the last successful snapshot upload to a mirror (0 = none)",
         lambda m: m["last_success_at"]),
        (CounterMetricFamily, "hastate_shipping_mirror_failures",
         "Failed log segment uploads to a mirror store",
         lambda m: m["shipping"]["failures_total"]),
    ]
    for kind, name, doc, value in families:
        family = kind(name, doc, labels=["node", "store"])
        for mirror in mirrors:
            family.add_metric([node, mirror["store"]], float(value(mirror) or 0))
        yield family


class NodeMetrics:
    """The registry for one node: scrape-time families, proposal metrics, process info."""

    def __init__(self, manager: Measured) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StatusCollector(manager))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._node = manager.instance_id
        self.proposal_seconds = Histogram(
            "hastate_proposal_seconds", "Time from proposal to applied on this node",
            ["node", "op"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.proposals = Counter("hastate_proposals", "Proposals by operation and result",
                                 ["node", "op", "result"], registry=self.registry)
        for result in PROPOSAL_RESULTS:   # export zeros so rate() and alerts see the series
            self.proposals.labels(self._node, "update", result)
        self.proposal_seconds.labels(self._node, "update")
        manager.proposal_observers.append(self.observe)

    def observe(self, op: str, seconds: float, outcome: str = "ok") -> None:
        """Record one completed proposal (the latency histogram counts successes only)."""
        if outcome in ("ok", "conflict"):
            self.proposal_seconds.labels(self._node, op).observe(seconds)
        self.proposals.labels(self._node, op, outcome).inc()

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
