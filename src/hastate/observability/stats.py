"""Registry-free counters that other layers update and ``/metrics`` reads at scrape time.

The consensus and snapshot layers must not import prometheus-client or know about
registries; they update a :class:`NodeStats` (one per node id, created on first use) with
plain integer/float operations, and :mod:`hastate.observability.metrics` turns it into
metric families when Prometheus scrapes. Every update is O(1) and takes one uncontended
lock at most, so it is safe on the Raft tick thread.

Hooks (who calls what):

* journal (consensus layer): time each fsync of the Raft journal, either by wrapping the
  sync function it is given or by calling ``observe_fsync`` itself::

      from hastate.observability import stats
      journal = stats.for_node(node_id).journal
      DurableJournal(path, ..., sync=journal.timed(os.fdatasync))
      # or: started = time.perf_counter(); os.fdatasync(fd)
      #     journal.observe_fsync(time.perf_counter() - started)

  The journal's size is read from the file at scrape time (``set_bytes`` overrides it).

* snapshots: :func:`attach` registers the engine's ``snapshots`` (the Raft engine's
  SnapshotService) by itself. Anything else can register with::

      stats.for_node(node_id).set_snapshot_provider(status, trigger=snapshot_now)

  ``status()`` returns an object or dict with :class:`hastate.snapshots.UploaderStatus`'s
  attributes (missing ones read as None) and optionally ``shipping`` (the LogShipper's
  status plus ``lag_entries``); ``trigger()`` takes a snapshot now and returns a JSON-able
  dict (it backs ``POST /admin/snapshot``; without it that endpoint answers 501).

* Raft events (elections started, log compactions) are counted by :class:`RaftEventCounter`,
  an on-tick callback the Raft engine installs on its node (:func:`attach_raft`) when it
  starts; nothing else to call.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from hastate.consensus.node import RaftNode

#: The Raft journal's file name inside data_dir (hastate.consensus.node.JOURNAL).
JOURNAL_FILE = "raft.journal"
#: Journal fsync latency buckets (seconds): local SSD ~0.1-2 ms, network disks 1-20 ms.
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5)


class LatencyStats:
    """A fixed-bucket histogram without a registry: ``observe`` is a bisect and three adds."""

    def __init__(self, buckets: Sequence[float] = FSYNC_BUCKETS) -> None:
        self.buckets = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self.buckets) + 1)   # last slot: above every bucket (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Record one duration."""
        slot = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            self._counts[slot] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative ``[(le, count), ..., ("+Inf", total)]`` and the sum, consistent."""
        with self._lock:
            counts = list(self._counts)
            total_sum = self._sum
        cumulative, running = [], 0
        for bound, count in zip((*[repr(b) for b in self.buckets], "+Inf"), counts):
            running += count
            cumulative.append((bound, running))
        return cumulative, total_sum

    @property
    def count(self) -> int:
        """Observations so far."""
        with self._lock:
            return sum(self._counts)


class JournalStats:
    """What the Raft journal reports: fsync latency and its size on disk."""

    def __init__(self) -> None:
        self.fsync = LatencyStats(FSYNC_BUCKETS)
        self.bytes: int | None = None     # None until the journal reports a size

    def observe_fsync(self, seconds: float) -> None:
        """One fsync of the journal took ``seconds``."""
        self.fsync.observe(seconds)

    def timed(self, sync: Callable[[int], None]) -> Callable[[int], None]:
        """Wrap ``sync(fd)`` (e.g. ``os.fdatasync``) so every call is observed."""
        def timed_sync(fd: int) -> None:
            started = time.perf_counter()
            try:
                sync(fd)
            finally:
                self.observe_fsync(time.perf_counter() - started)
        return timed_sync

    def set_bytes(self, size: int) -> None:
        """The journal now occupies ``size`` bytes on disk (else the file is stat'ed)."""
        self.bytes = int(size)


@dataclass(frozen=True)
class SnapshotInfo:
    """The snapshot provider's status as the metrics and ``/status`` read it."""

    enabled: bool
    last_success_at: float | None = None    # Unix time of the last successful upload
    last_duration_s: float | None = None
    last_size_bytes: int | None = None
    last_index: int | None = None
    uploads_total: int = 0
    failures_total: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    pending: int = 0
    # log shipping (None when the provider has no shipper, or this node is not shipping)
    shipping_lag_entries: int | None = None
    shipping_last_success_at: float | None = None
    shipping_segments_total: int = 0
    shipping_failures_total: int = 0
    # one status dict per [snapshots] mirror (SnapshotService.status()["mirrors"])
    mirrors: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class NodeStats:
    """Counters for one node; get it with :func:`for_node`."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.journal = JournalStats()
        self.elections_started = 0      # updated by RaftEventCounter on the tick thread
        self.log_compactions = 0
        self.journal_path: Path | None = None   # set by attach(): the node's journal file
        self._snapshot_status: Callable[[], Any] | None = None
        self._snapshot_trigger: Callable[[], Any] | None = None
        self._service: Any = None   # the SnapshotService attach() registered, if any

    # -- snapshots ------------------------------------------------------------------------
    def set_snapshot_provider(self, status: Callable[[], Any] | None,
                              trigger: Callable[[], Any] | None = None) -> None:
        """Register (or with ``None`` remove) the snapshot status source and trigger."""
        self._snapshot_status = status
        self._snapshot_trigger = trigger if status is not None else None

    @property
    def snapshot_trigger(self) -> Callable[[], Any] | None:
        """The callable behind ``POST /admin/snapshot``, or None when none is registered."""
        return self._snapshot_trigger

    def snapshot_info(self) -> SnapshotInfo:
        """The provider's status; ``enabled=False`` when none is registered or it fails."""
        source = self._snapshot_status
        if source is None:
            return SnapshotInfo(enabled=False)
        try:
            st = source()
        except Exception as exc:  # a broken provider must not break /metrics
            return SnapshotInfo(enabled=True, last_error=f"status provider failed: {exc!r}")
        if st is None:
            return SnapshotInfo(enabled=True)

        def get(name: str, default: Any = None) -> Any:
            value = st.get(name, default) if isinstance(st, dict) else getattr(st, name, default)
            return default if value is None and default is not None else value

        shipping = get("shipping") or {}
        return SnapshotInfo(enabled=True, last_success_at=get("last_success_at"),
                            last_duration_s=get("last_duration_s"),
                            last_size_bytes=get("last_size_bytes"),
                            last_index=get("last_index"),
                            uploads_total=int(get("uploads_total", 0)),
                            failures_total=int(get("failures_total", 0)),
                            last_error=get("last_error"), last_error_at=get("last_error_at"),
                            pending=int(get("pending", 0)),
                            shipping_lag_entries=shipping.get("lag_entries"),
                            shipping_last_success_at=shipping.get("last_shipped_at"),
                            shipping_segments_total=int(shipping.get("segments_total") or 0),
                            shipping_failures_total=int(shipping.get("failures_total") or 0),
                            mirrors=tuple(get("mirrors") or ()))

    def journal_bytes(self) -> int | None:
        """The journal's size: as reported, else the file's size, else None."""
        if self.journal.bytes is not None:
            return self.journal.bytes
        if self.journal_path is None:
            return None
        try:
            return self.journal_path.stat().st_size
        except OSError:
            return None

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able counters, for ``/status`` (snapshots are in status() already)."""
        return {"elections_started": self.elections_started,
                "log_compactions": self.log_compactions,
                "journal_fsyncs": self.journal.fsync.count,
                "journal_bytes": self.journal_bytes()}


_nodes: dict[str, NodeStats] = {}
_nodes_lock = threading.Lock()


def for_node(node_id: str) -> NodeStats:
    """The process-wide :class:`NodeStats` of ``node_id`` (created on first use)."""
    stats = _nodes.get(node_id)
    if stats is None:
        with _nodes_lock:
            stats = _nodes.setdefault(node_id, NodeStats(node_id))
    return stats


class RaftEventCounter:
    """Tick observer copying the Raft layer's election and compaction counts into NodeStats.

    An election starts when this node becomes candidate for a term (a candidate whose
    election times out starts another one with the next term); the Raft layer counts both.
    Elections add up across restarts of the node in this process. Runs on the tick thread:
    two attribute reads per tick.
    """

    def __init__(self, node: "RaftNode", stats: NodeStats) -> None:
        self._node = node
        self._stats = stats
        self._elections_seen = 0

    def __call__(self, _tick_start: float) -> None:
        node = self._node
        started = node.elections_started()
        if started < self._elections_seen:  # the node restarted: its count began again
            self._elections_seen = 0
        self._stats.elections_started += started - self._elections_seen
        self._elections_seen = started
        self._stats.log_compactions = node.compactions()


def attach_raft(node: "RaftNode", node_id: str, data_dir: Path) -> NodeStats:
    """Install the Raft event counter on a started Raft node once; return its NodeStats."""
    stats = for_node(node_id)
    with _nodes_lock:
        if node not in _attached:
            counter = RaftEventCounter(node, stats)
            _attached[node] = counter
            node.add_tick_observer(counter)
            stats.journal_path = data_dir / JOURNAL_FILE
    return stats


class Attached(Protocol):
    """What :func:`attach` reads of a manager (``StateManager`` has it)."""

    instance_id: str
    engine: Any


def attach(manager: Attached) -> NodeStats:
    """Register the snapshot service of ``manager``'s engine, if it runs one (an engine that
    uploads periodic snapshots exposes it as ``snapshots``); return the NodeStats.

    A previous manager's service under the same instance id is dropped.
    """
    stats = for_node(manager.instance_id)
    service = getattr(manager.engine, "snapshots", None)
    if service is not stats._service:
        if service is not None:
            stats.set_snapshot_provider(lambda: _service_status(service),
                                        trigger=getattr(service, "snapshot_now", None))
        elif stats._service is not None:   # a previous manager's service: drop it
            stats.set_snapshot_provider(None)
        stats._service = service
    return stats


def _service_status(service: Any) -> dict[str, Any]:
    """A SnapshotService's uploader counters plus its shipping and mirrors' status, as one dict."""
    status = dataclasses.asdict(service.uploader.status())
    full = service.status() or {}
    status["shipping"] = full.get("shipping")
    status["mirrors"] = full.get("mirrors")
    return status


_attached: "weakref.WeakKeyDictionary[Any, RaftEventCounter]" = weakref.WeakKeyDictionary()
