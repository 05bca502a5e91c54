"""Linearizable reads on Firestore, checked on a real history: three bots write their own
key with growing values while three readers read every key linearizably. A read must
return, for each key, at least the last value acknowledged before the read began and at
most the last value whose write began before the read ended (real-time order). A negative
control feeds the checker a stale read."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.testing.firestore import FirestoreEmulator, cluster_file

from .conftest import started

pytestmark = pytest.mark.integration

IDS = ["bot-1", "bot-2", "bot-3"]
Write = tuple[str, int, float, float]                 # key, value, start, acknowledged
Read = tuple[float, float, dict[str, int]]            # start, end, values
WRITES_PER_BOT = 6


def stale_reads(writes: list[Write], reads: list[Read]) -> list[tuple]:
    """Reads that missed an acknowledged write or saw one not yet begun."""
    bad = []
    for start, end, values in reads:
        for key in {w[0] for w in writes}:
            floor = max((v for k, v, _s, ack in writes if k == key and ack < start),
                        default=0)
            ceiling = max((v for k, v, s, _a in writes if k == key and s < end), default=0)
            seen = values.get(key, 0)
            if not floor <= seen <= ceiling:
                bad.append((key, seen, floor, ceiling))
    return bad


@pytest.fixture
def bots(emulator: FirestoreEmulator, tmp_path: Path) -> Iterator[list[StateManager]]:
    config = cluster_file(tmp_path / "cluster.toml", name="linearizable", ids=IDS)
    with started(config, IDS, write_timeout=20.0) as managers:
        yield list(managers.values())


def test_linearizable_reads_see_every_write_acknowledged_before_them(
        bots: list[StateManager]) -> None:
    writes: list[Write] = []
    reads: list[Read] = []
    writers_done = threading.Event()
    keys = [f"reg/{sm.instance_id}" for sm in bots]

    def writer(sm: StateManager, key: str) -> None:
        for value in range(1, WRITES_PER_BOT + 1):
            start = time.monotonic()
            sm.save_state({key: value})
            writes.append((key, value, start, time.monotonic()))

    def reader(sm: StateManager) -> None:
        # A short pause between reads keeps three readers from starving the emulator's
        # writers on a busy machine; the history still interleaves reads with every write.
        while not writers_done.is_set():
            start = time.monotonic()
            values = sm.get_state(keys=keys)
            reads.append((start, time.monotonic(), values))
            time.sleep(0.01)

    writer_threads = [threading.Thread(target=writer, args=(sm, k))
                      for sm, k in zip(bots, keys)]
    reader_threads = [threading.Thread(target=reader, args=(sm,)) for sm in bots]
    for t in writer_threads + reader_threads:
        t.start()
    for t in writer_threads:
        t.join(120)
    writers_done.set()
    for t in reader_threads:
        t.join(60)
    assert len(writes) == WRITES_PER_BOT * len(bots), len(writes)
    assert len(reads) >= 30, len(reads)
    assert stale_reads(writes, reads) == []


def test_the_checker_catches_a_stale_read() -> None:
    writes = [("k", 1, 0.0, 1.0), ("k", 2, 1.0, 2.0)]
    assert stale_reads(writes, [(2.5, 3.0, {"k": 2})]) == []
    assert stale_reads(writes, [(2.5, 3.0, {"k": 1})]) == [("k", 1, 2, 2)]
    assert stale_reads(writes, [(0.1, 0.5, {"k": 2})]) == [("k", 2, 0, 1)]
