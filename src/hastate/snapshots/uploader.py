"""Background snapshot uploads: the caller hands over a state copy and never waits on I/O.

The uploader knows nothing about Raft: the node calls :meth:`SnapshotUploader.submit` on
the leader with a copy of the state taken at ``(index, term)``. A bounded queue holds the
snapshots not yet uploaded; when it is full the oldest one is dropped (only the newest
state matters for recovery). One thread encodes and uploads, retrying failed uploads with
exponential backoff until they succeed, a newer snapshot supersedes them, or the uploader
stops. Counters and the last outcome are exposed by :meth:`SnapshotUploader.status`.

Usage::

    uploader = SnapshotUploader(open_store("gs://bucket/prod"), cluster="prod", keep=48)
    uploader.start()
    uploader.submit(state_copy, index=applied_index, term=applied_term, keys=len(state_copy))
    ...
    uploader.stop()
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from hastate.errors import CorruptDataError, SnapshotError
from hastate.observability import tracing
from hastate.snapshots.format import StaleSnapshotError, prune, write_snapshot
from hastate.snapshots.store import SnapshotStore

logger = logging.getLogger(__name__)

#: Snapshots waiting for upload before the oldest is dropped.
DEFAULT_QUEUE_SIZE = 2
#: First retry delay after a failed upload, doubled per failure up to DEFAULT_BACKOFF_MAX.
DEFAULT_BACKOFF_INITIAL = 0.5
DEFAULT_BACKOFF_MAX = 30.0
#: Store and data errors that may go away by themselves (network, permissions, quota).
_RETRYABLE = (SnapshotError, CorruptDataError)


@dataclass(frozen=True)
class UploaderStatus:
    """A consistent copy of the uploader's counters, for status output and metrics.

    ``last_error`` is kept after later successes; compare ``last_error_at`` with
    ``last_success_at`` to tell whether the store is failing now.
    """

    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
    failures_total: int
    uploads_total: int
    dropped_total: int
    skipped_total: int
    last_duration_s: float | None
    last_size_bytes: int | None
    last_index: int | None
    pending: int


@dataclass(frozen=True)
class _Job:
    """One submitted snapshot awaiting upload."""

    body: dict[str, Any]
    index: int
    term: int
    keys: int


class SnapshotUploader:
    """Uploads submitted state copies to a snapshot store from its own thread.

    Args:
        store: where snapshots go.
        cluster: cluster name written into (and checked against) every snapshot.
        queue_size: snapshots kept waiting before the oldest is dropped.
        backoff_initial: first retry delay in seconds; doubles per failure.
        backoff_max: longest retry delay in seconds.
        keep: if set, prune to this many snapshots after each successful upload.
        clock: wall clock for ``last_success_at`` (a seam for tests).
    """

    def __init__(self, store: SnapshotStore, *, cluster: str,
                 queue_size: int = DEFAULT_QUEUE_SIZE,
                 backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
                 backoff_max: float = DEFAULT_BACKOFF_MAX, keep: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(f"need 0 < backoff_initial <= backoff_max, got {backoff_initial} "
                             f"and {backoff_max}")
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None, got {keep}")
        self.store = store
        self.cluster = cluster
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.keep = keep
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: collections.deque[_Job] = collections.deque()
        self._queue_size = queue_size
        self._current: _Job | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_success_at: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._failures_total = 0
        self._uploads_total = 0
        self._dropped_total = 0
        self._skipped_total = 0
        self._last_duration_s: float | None = None
        self._last_size_bytes: int | None = None
        self._last_index: int | None = None

    def start(self) -> None:
        """Start the upload thread (once)."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("SnapshotUploader.start() called twice")
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"hastate-snapshot-uploader[{self.store}]")
            self._thread.start()

    def submit(self, body: dict[str, Any], index: int, term: int, keys: int) -> bool:
        """Queue the state ``body`` at ``(index, term)`` for upload; never blocks on I/O.

        ``body`` is encoded later on the upload thread, so pass a copy the caller will not
        mutate. Returns False (and counts a skip) when ``index`` is not newer than the last
        uploaded or queued snapshot. When the queue is full the oldest queued snapshot is
        dropped and counted.
        """
        with self._cond:
            known = [j.index for j in (*self._pending, self._current) if j is not None]
            if self._last_index is not None:
                known.append(self._last_index)
            newest = max(known, default=None)
            if newest is not None and index <= newest:
                self._skipped_total += 1
                logger.debug("snapshot at index %d skipped: index %d is already uploaded or "
                             "queued", index, newest)
                return False
            if len(self._pending) >= self._queue_size:
                dropped = self._pending.popleft()
                self._dropped_total += 1
                logger.warning("snapshot queue full: dropped the one at index %d for index %d "
                               "(the store at %s is slow or failing)", dropped.index, index,
                               self.store)
            self._pending.append(_Job(body=body, index=index, term=term, keys=keys))
            self._cond.notify_all()
            return True

    def status(self) -> UploaderStatus:
        """Return the counters and last outcome, consistent with each other."""
        with self._cond:
            return UploaderStatus(
                last_success_at=self._last_success_at, last_error=self._last_error,
                last_error_at=self._last_error_at,
                failures_total=self._failures_total, uploads_total=self._uploads_total,
                dropped_total=self._dropped_total, skipped_total=self._skipped_total,
                last_duration_s=self._last_duration_s, last_size_bytes=self._last_size_bytes,
                last_index=self._last_index, pending=len(self._pending))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or uploading; False if ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._current is None,
                                       timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread after the current attempt; queued snapshots are discarded."""
        with self._cond:
            self._stopping = True
            if self._pending:
                logger.warning("uploader stopping with %d snapshot(s) not uploaded to %s",
                               len(self._pending), self.store)
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> SnapshotUploader:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        """Upload thread: take the oldest queued snapshot and upload it, until stopped."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                job = self._current = self._pending.popleft()
            try:
                self._upload(job)
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()

    def _upload(self, job: _Job) -> None:
        """Upload one snapshot (one ``hastate.snapshot.upload`` span, retries as events)."""
        with tracing.span("hastate.snapshot.upload", attributes={
                "db.system.name": tracing.SYSTEM, "db.namespace": self.cluster,
                "hastate.log.index": job.index, "hastate.raft.term": job.term,
                "hastate.keys.count": job.keys, "hastate.snapshot.store": str(self.store)}
                ) as span:
            span.set_attribute("hastate.outcome", self._upload_until_done(job, span))

    def _upload_until_done(self, job: _Job, span: object) -> str:
        """Retry with backoff until done, superseded or stopped; returns the outcome."""
        delay = self.backoff_initial
        while True:
            started = time.monotonic()
            try:
                meta = write_snapshot(self.store, job.body, cluster=self.cluster,
                                      index=job.index, term=job.term, keys=job.keys)
            except StaleSnapshotError as exc:
                self._record_failure(exc)
                logger.warning("snapshot at index %d not uploaded: %s", job.index, exc)
                return "stale"
            except _RETRYABLE as exc:
                failures = self._record_failure(exc)
                span.add_event("retry", {"error.type": type(exc).__qualname__,
                                         "hastate.retry.delay_s": delay})
                logger.warning("snapshot upload at index %d failed (%d failures so far), "
                               "retrying in %.1fs: %s", job.index, failures, delay, exc)
                if not self._backoff(job, delay):
                    return "given_up"
                delay = min(delay * 2, self.backoff_max)
                continue
            except Exception as exc:
                self._record_failure(exc)
                logger.exception("snapshot at index %d cannot be encoded or uploaded; not "
                                 "retrying", job.index)
                tracing.set_error(span, exc)
                return "failed"
            duration = time.monotonic() - started
            with self._cond:
                self._uploads_total += 1
                self._last_success_at = self._clock()
                self._last_duration_s = duration
                self._last_size_bytes = meta.size
                self._last_index = job.index
            logger.info("uploaded snapshot at index %d (term %d, %d bytes) to %s in %.2fs",
                        job.index, job.term, meta.size, self.store, duration)
            span.set_attribute("hastate.snapshot.bytes", meta.size)
            self._prune()
            return "uploaded"

    def _backoff(self, job: _Job, delay: float) -> bool:
        """Wait ``delay`` before a retry; False if stopping or a newer snapshot is queued."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._stopping, delay)
            if self._pending and not self._stopping:
                self._dropped_total += 1
                logger.warning("giving up on the snapshot at index %d: index %d is queued",
                               job.index, self._pending[-1].index)
            return not self._pending and not self._stopping

    def _record_failure(self, exc: Exception) -> int:
        """Count a failed attempt, keep its message for status; return the failure count."""
        with self._cond:
            self._failures_total += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._last_error_at = self._clock()
            return self._failures_total

    def _prune(self) -> None:
        """Apply retention after a successful upload; a failure only delays it."""
        if self.keep is None:
            return
        try:
            prune(self.store, self.keep)
        except _RETRYABLE as exc:
            logger.warning("pruning %s to %d snapshots failed, will retry after the next "
                           "upload: %s", self.store, self.keep, exc)
