"""sm.events on a real cluster: appends with expected versions and retries through a leader
kill; a catch-up subscription on a follower, restarted from its checkpoint midway, delivers
every event exactly once in position order."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from hastate.errors import WriteError
from hastate.events import NO_STREAM, NewEvent, RecordedEvent
from hastate.testing import wait_for
from hastate.testing.embedded import EmbeddedCluster

pytestmark = pytest.mark.integration

STREAMS = ["orders-BTC", "orders-ETH", "fills-BTC"]
APPENDS = 60


def test_appends_and_subscription_through_a_leader_kill(tmp_path: Path) -> None:
    with EmbeddedCluster(tmp_path, 3, name="streams").running(http=False) as cluster:
        sm = cluster.sm
        assert sm is not None
        cluster.make_leader("instance-2")
        acked: dict[str, list[str]] = {s: [] for s in STREAMS}
        errors: list[BaseException] = []
        seen: list[RecordedEvent] = []
        progress = threading.Event()

        def write() -> None:
            expected: dict[str, int | str] = {s: NO_STREAM for s in STREAMS}
            try:
                for i in range(APPENDS):
                    stream = STREAMS[i % 3]
                    batch = [NewEvent("Tick", {"i": i, "k": k}, {"correlation_id": f"c{i}"},
                                      id=f"a{i}-{k}") for k in range(1 + i % 3)]
                    while True:
                        try:
                            result = sm.events.append(stream, batch, expected[stream])
                            break
                        except WriteError as exc:     # unknown outcome: retry, same ids
                            if not exc.outcome_unknown:
                                raise
                    expected[stream] = result.next_expected_version
                    acked[stream].extend(e.id for e in batch)
                    progress.set()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        def consume(after: int, stop_at: int | None) -> int:
            sub = sm.events.subscribe(after)
            for event in sub:
                seen.append(event)
                if stop_at is not None and event.position >= stop_at:
                    sub.stop()
            return sub.position

        writer = threading.Thread(target=write)
        writer.start()
        checkpoint = consume(0, 15)                  # the subscriber restarts at 15...
        cluster.kill("instance-2", signal.SIGKILL)
        wait_for(lambda: sm.leader() in ("instance-1", "instance-3"), timeout=30)
        writer.join(120)
        assert not errors, errors
        head = sm.events.head()
        resumed = threading.Thread(target=consume, args=(checkpoint, head))
        resumed.start()                              # ...and resumes from its checkpoint
        resumed.join(60)
        assert not resumed.is_alive()

        everything = sm.events.read_all()
        positions = [e.position for e in everything]
        assert positions == sorted(set(positions)) and positions[-1] == head
        assert seen == everything
        for stream in STREAMS:
            events = sm.events.read_stream(stream)
            assert [e.id for e in events] == acked[stream]
            assert [e.version for e in events] == list(range(len(events)))
        assert all(e.metadata["correlation_id"] == f"c{e.data['i']}" for e in everything)
