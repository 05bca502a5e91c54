"""Rebuild a state from a snapshot store: a verified snapshot plus shipped segments.

The plan picks the newest snapshot at or before the target (an index, a wall-clock time,
a named snapshot or simply the latest), verifies it, then replays segments in order while
their chain has no gap, stopping at the target. Nothing is written anywhere until the
whole state is rebuilt and checked: seeding data dirs is the caller's last step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from hastate.errors import (CorruptDataError, ForeignDataError, SnapshotError,
                            SnapshotNotFoundError)
from hastate.observability import tracing
from hastate.snapshots.format import SnapshotMeta, list_snapshots, load
from hastate.snapshots.segments import list_segments, read_segment
from hastate.snapshots.store import SnapshotStore, location
from hastate.state.machine import ReplicatedState

logger = logging.getLogger(__name__)


@dataclass
class RestoreResult:
    """What was restored and how far the log replay got."""

    snapshot: SnapshotMeta | None  # None: replayed from an empty state (log from index 0)
    index: int                      # last applied command index after replay
    term: int
    keys: int
    state_hash: str
    segments: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)     # refused snapshots (with --fallback)
    stopped_at_gap: int | None = None
    machine: ReplicatedState = field(default_factory=ReplicatedState, repr=False)

    def summary(self) -> dict[str, object]:
        """JSON-friendly description for the CLI."""
        return {"snapshot": self.snapshot.name if self.snapshot else None,
                "snapshot_index": self.snapshot.index if self.snapshot else 0,
                "index": self.index, "term": self.term, "keys": self.keys,
                "state_hash": self.state_hash, "segments_replayed": len(self.segments),
                "refused_snapshots": self.skipped, "stopped_at_gap": self.stopped_at_gap}


def _candidates(store: SnapshotStore, cluster: str, *, name: str | None, index: int | None,
                at_time: float | None) -> list[SnapshotMeta | None]:
    """Snapshots to try, best first; None stands for "an empty state plus the whole log"."""
    snapshots = list_snapshots(store)  # newest first
    if name is not None:
        chosen = [s for s in snapshots if s.name == name]
        if not chosen:
            raise SnapshotNotFoundError(f"{location(store, name)}: no such snapshot in the "
                                        "manifest; run `hastate snapshot list` to see them")
        return chosen + [s for s in snapshots if s.index < chosen[0].index]
    if index is not None:
        snapshots = [s for s in snapshots if s.index <= index]
    if at_time is not None:
        snapshots = [s for s in snapshots if s.created_at <= at_time]
    segments = list_segments(store)
    if segments and read_segment(store, segments[0][2], cluster).prev == 0:
        return [*snapshots, None]    # the shipped log reaches back to an empty state
    if not snapshots:
        raise SnapshotNotFoundError(f"{store}: no snapshot at or before the requested point; "
                                    "`hastate snapshot list` shows what exists")
    return snapshots


def rebuild(store: SnapshotStore, cluster: str, *, name: str | None = None,
            index: int | None = None, at_time: float | None = None, fallback: bool = False,
            replay: bool = True,
            progress: Callable[[int, int], None] | None = None) -> RestoreResult:
    """Rebuild the state at the requested point; raise CorruptDataError/SnapshotError on failure.

    ``fallback`` allows an older snapshot when the chosen one fails verification.
    ``progress(done, total)`` is called per segment replayed. Traced as ``hastate.restore``.
    """
    with tracing.span("hastate.restore", attributes={
            "db.system.name": tracing.SYSTEM, "db.namespace": cluster,
            "hastate.snapshot.store": str(store)}) as span:
        result = _rebuild(store, cluster, name=name, index=index, at_time=at_time,
                          fallback=fallback, replay=replay, progress=progress)
        span.set_attributes({"hastate.snapshot.name": result.snapshot.name if result.snapshot
                             else "", "hastate.log.index": result.index,
                             "hastate.keys.count": result.keys,
                             "hastate.segments.replayed": len(result.segments),
                             "hastate.snapshots.refused": len(result.skipped),
                             "hastate.state_hash": result.state_hash})
        return result


def _rebuild(store: SnapshotStore, cluster: str, *, name: str | None, index: int | None,
             at_time: float | None, fallback: bool, replay: bool,
             progress: Callable[[int, int], None] | None) -> RestoreResult:
    skipped: list[str] = []
    for meta in _candidates(store, cluster, name=name, index=index, at_time=at_time):
        machine = ReplicatedState()
        if meta is not None:
            try:
                machine.load_body(load(store, cluster=cluster, name=meta.name)[1])
            except ForeignDataError:
                raise  # the wrong store: an older snapshot there is no better
            except CorruptDataError as exc:
                if not fallback:
                    raise CorruptDataError(f"{exc}. Re-run with --fallback to use the previous "
                                           "good snapshot") from None
                logger.warning("refusing snapshot, falling back: %s", exc)
                skipped.append(meta.name)
                continue
        result = RestoreResult(snapshot=meta, index=machine.applied_index,
                               term=meta.term if meta else 0, keys=0, state_hash="",
                               skipped=skipped, machine=machine)
        if replay:
            _replay(store, cluster, result, index, at_time, progress)
        if index is not None and result.index < index and name is None:
            raise SnapshotError(f"{store}: the shipped log ends at index {result.index}, before "
                                f"the requested index {index}; choose an earlier point")
        result.keys = len(machine)
        result.state_hash = machine.state_hash()
        return result
    raise CorruptDataError(f"{store}: every candidate snapshot failed verification "
                           f"({', '.join(skipped)})")


def _replay(store: SnapshotStore, cluster: str, result: RestoreResult, index: int | None,
            at_time: float | None, progress: Callable[[int, int], None] | None) -> None:
    reached = result.machine.applied_index
    todo = [(first, last, seg) for first, last, seg in list_segments(store) if last > reached]
    for done, (_first, _last, seg_name) in enumerate(todo, start=1):
        segment = read_segment(store, seg_name, cluster)
        if segment.prev > reached:
            logger.warning("segment %s starts after index %d (gap): replay stops there",
                           seg_name, reached)
            result.stopped_at_gap = reached
            break
        past_target = False
        for entry_index, wall, raw in segment.entries:
            if entry_index <= reached:
                continue
            if (index is not None and entry_index > index) or \
                    (at_time is not None and wall > at_time):
                past_target = True
                break
            result.machine.apply_at(entry_index, raw)
            reached = entry_index
            result.term = max(result.term, segment.term)
        result.segments.append(seg_name)
        if progress is not None:
            progress(done, len(todo))
        if past_target:
            break
    result.index = reached
