"""The history recorder must keep exactly what clients reported, and survive JSON."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from .history import F, History, Operation, Outcome


def fake_clock() -> History:
    """A history whose clock ticks 10 ns per reading, for exact expectations."""
    ticks = itertools.count(step=10)
    return History(clock=lambda: next(ticks))


def test_invoke_and_complete_record_times_outcome_and_read_value() -> None:
    history = fake_clock()
    write = history.invoke("p0", "x", F.WRITE, 1)
    read = history.invoke("p1", "x", F.READ)
    history.complete(write, Outcome.OK)
    history.complete(read, Outcome.OK, value=1)
    assert history.operations() == [
        Operation(write, "p0", "x", F.WRITE, 1, 0, 20, Outcome.OK),
        Operation(read, "p1", "x", F.READ, 1, 10, 30, Outcome.OK),
    ]


def test_operation_in_flight_is_reported_unknown() -> None:
    history = fake_clock()
    history.invoke("p0", "x", F.CAS, (1, 2))
    (op,) = history.operations()
    assert (op.outcome, op.complete_ns) == (Outcome.UNKNOWN, None)


def test_completing_twice_is_refused() -> None:
    history = fake_clock()
    op_id = history.invoke("p0", "x", F.WRITE, 1)
    history.complete(op_id, Outcome.UNKNOWN)
    with pytest.raises(ValueError, match="already completed"):
        history.complete(op_id, Outcome.OK)


def test_cas_needs_expected_and_new() -> None:
    with pytest.raises(ValueError, match="cas value"):
        fake_clock().invoke("p0", "x", F.CAS, 5)


def test_json_round_trip_and_files(tmp_path: Path) -> None:
    history = fake_clock()
    history.complete(history.invoke("p0", "x", F.WRITE, {"a": [1, 2]}), Outcome.OK)
    history.complete(history.invoke("p1", "x", F.CAS, ["x", "y"]), Outcome.FAIL)
    history.invoke("p2", "y", F.READ)
    path = tmp_path / "history.json"
    history.save(path)
    loaded = History.load(path)
    assert loaded.operations() == history.operations()
    # Ids continue after the loaded ones, so a loaded history can be extended.
    assert loaded.invoke("p3", "x", F.READ) == 3


def test_unknown_format_version_is_refused() -> None:
    with pytest.raises(ValueError, match="format version"):
        History.from_json('{"version": 99, "operations": []}')


def test_concurrent_clients_get_distinct_ids() -> None:
    history = History()

    def client(name: str) -> None:
        for i in range(200):
            history.complete(history.invoke(name, "x", F.WRITE, i), Outcome.OK)

    threads = [threading.Thread(target=client, args=(f"p{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = history.operations()
    assert len({op.id for op in ops}) == len(ops) == 800
    assert all(op.invoke_ns <= op.complete_ns for op in ops if op.complete_ns is not None)
