"""Projector: exactly once under redelivery and overlapping projectors; a projector that
writes its keys and its checkpoint separately double-applies after a crash (caught)."""

from __future__ import annotations

import threading
from typing import Any

from hastate.events import NewEvent, RecordedEvent
from hastate.events.projection import Projector
from hastate.events.streams import EventStreams
from hastate.state.txn import put
from hastate.testing.event_checks import check_projection
from hastate.testing.events import MachineBackend


def counting(es: EventStreams, name: str = "counts") -> Projector:
    return Projector(es, name, reads=lambda e: [f"counts/{e.stream}"],
                     step=lambda e, v: {f"counts/{e.stream}": (v[f"counts/{e.stream}"] or 0) + 1})


def replay(events: list[RecordedEvent]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[f"counts/{e.stream}"] = out.get(f"counts/{e.stream}", 0) + 1
    return out


def projected(backend: MachineBackend) -> dict[str, Any]:
    state = backend.read(["counts/a", "counts/b"], linearizable=True)
    return state


def test_redelivery_and_overlapping_projectors_apply_each_event_once() -> None:
    backend = MachineBackend(read_delay=0.001)
    es = EventStreams(backend)
    for i in range(30):
        es.append("ab"[i % 2], [NewEvent("T")])
    stop = threading.Event()
    projectors = [threading.Thread(target=counting(es).run, args=(stop,)) for _ in range(3)]
    for thread in projectors:
        thread.start()
    for i in range(30, 60):
        es.append("ab"[i % 2], [NewEvent("T")])
    one, head = counting(es), es.head()
    while one.checkpoint() < head:
        stop.wait(0.05)
    stop.set()
    for thread in projectors:
        thread.join(10)
    assert not any(t.is_alive() for t in projectors)
    assert not one.apply(es.read_all()[4])        # redelivered: refused
    assert check_projection(es.read_all(), projected(backend), replay) == []


def test_split_writes_projector_double_applies_and_the_check_catches_it() -> None:
    backend = MachineBackend()
    es = EventStreams(backend)
    es.append("a", [NewEvent("T"), NewEvent("T")])
    first, second = es.read_all()

    def split_apply(event: RecordedEvent, crash: bool) -> None:
        value = backend.read(["counts/a"], linearizable=True).get("counts/a") or 0
        es.backend.transaction([], [put("counts/a", value + 1)], [])
        if crash:
            return                           # died before writing the checkpoint
        es.backend.transaction([], [put(counting(es).key, event.position)], [])

    split_apply(first, crash=False)
    split_apply(second, crash=True)
    split_apply(second, crash=False)         # the restarted projector gets it again
    assert check_projection(es.read_all(), projected(backend), replay) != []
