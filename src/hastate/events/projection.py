"""Projections on hastate's own streams, exactly once: each event's writes and the
projection's checkpoint commit as ONE transaction.

Example (events per stream)::

    counts = Projector(sm.events, "counts",
                       reads=lambda e: [f"counts/{e.stream}"],
                       step=lambda e, v: {f"counts/{e.stream}": (v[f"counts/{e.stream}"] or 0) + 1})
    counts.run(stop)            # blocks; any node, restart at will

``run`` subscribes after the recorded checkpoint; for each event it reads the keys
``reads(event)`` names, computes ``step(event, values)`` (the keys to put) and commits them
with the checkpoint only if neither those keys nor the checkpoint changed, so an event is
applied once however often it is delivered, by however many projectors at once.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from hastate.events.backend import Plan, commit
from hastate.events.records import RecordedEvent
from hastate.events.streams import EventStreams

Reads = Callable[[RecordedEvent], list[str]]
Step = Callable[[RecordedEvent, dict[str, Any]], dict[str, Any]]


class _Applied(Exception):
    """The checkpoint is already at or past the event (another projector applied it)."""


class Projector:
    """A named projection of ``streams``' ``$all`` into keys of the state."""

    def __init__(self, streams: EventStreams, name: str, reads: Reads, step: Step) -> None:
        self.streams = streams
        self.name = name
        self.key = streams.layout.tracking(f"projection/{name}")
        self.reads = reads
        self.step = step

    def checkpoint(self) -> int:
        """The last position applied (0 when none), linearizable."""
        return self.streams.backend.read([self.key], linearizable=True).get(self.key, 0)

    def apply(self, event: RecordedEvent) -> bool:
        """Apply one event with its checkpoint; False when it was applied already."""
        reads = self.reads(event)

        def decide(values: dict[str, Any]) -> Plan[bool]:
            if values.get(self.key, 0) >= event.position:
                raise _Applied
            puts = dict(self.step(event, {k: values.get(k) for k in reads}))
            puts[self.key] = event.position
            return Plan(puts, lambda _rev: True)

        try:
            return commit(self.streams.backend, [self.key, *reads], decide,
                          rejections=(_Applied,), timeout=self.streams.timeout)
        except _Applied:
            return False

    def run(self, stop: threading.Event) -> None:
        """Apply every event after the checkpoint, then live ones, until ``stop`` is set."""
        subscription = self.streams.subscribe(self.checkpoint())
        watcher = threading.Thread(target=lambda: (stop.wait(), subscription.stop()),
                                   daemon=True)
        watcher.start()
        for event in subscription:
            self.apply(event)
            if stop.is_set():
                break
        subscription.stop()
