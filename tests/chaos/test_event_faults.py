"""An event workload under repeated faults (``-m chaos``): writers on all three nodes append
with expected versions over HTTP, retrying unknown outcomes with the same ids; a projector
in the embedded node is restarted every round; each round kills the leader (SIGKILL) or
pauses it (SIGSTOP) and brings it back. Checked: no lost acknowledged event, no duplicate,
nothing from a refused append, no partial append, per-stream version order, and the
projection equal to a replay of the events."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from hastate.admin_client import call
from hastate.errors import NodeUnreachableError
from hastate.events.projection import Projector
from hastate.testing import wait_for
from hastate.testing.embedded import EmbeddedCluster
from hastate.testing.event_checks import (AppendAttempt, check_events, check_projection,
                                          writer_append)

pytestmark = pytest.mark.chaos

NODES = ["instance-1", "instance-2", "instance-3"]
PROCESSES = ["instance-2", "instance-3"]


def replay(events: list) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[f"counts/{e.stream}"] = out.get(f"counts/{e.stream}", 0) + 1
    return out


@pytest.mark.parametrize("rounds", [6])
def test_event_workload_under_leader_kills_and_pauses(tmp_path: Path, rounds: int) -> None:
    rng = random.Random(rounds)
    with EmbeddedCluster(tmp_path, 3, name="eventfaults").running() as cluster:
        sm = cluster.sm
        assert sm is not None
        attempts: list[AppendAttempt] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        stop_writers = threading.Event()

        def write(w: int) -> None:
            node_index, expected, i = w, "no_stream", 0
            try:
                while not stop_writers.is_set():
                    attempt, body = writer_append(w, i, expected)
                    with lock:
                        attempts.append(attempt)
                    deadline = time.monotonic() + 120
                    while True:
                        node = NODES[node_index % 3]
                        try:
                            code, answer = call(node, cluster.http[node], "/v1/events/append",
                                                body=body, token=cluster.admin_token, timeout=10)
                        except NodeUnreachableError:
                            code, answer = 0, {"outcome_unknown": True}
                        if code == 200:
                            break
                        assert code in (0, 503) and answer.get("outcome_unknown") is not False, \
                            (code, answer)
                        assert time.monotonic() < deadline, "append never confirmed"
                        node_index += 1      # unknown: retry the same ids, on another node
                        time.sleep(0.05)
                    attempt.outcome, attempt.positions = "ok", answer["positions"]
                    if attempt.stream != "shared":
                        expected = answer["versions"][-1]
                    i += 1
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        def projector() -> Projector:
            return Projector(sm.events, "counts", reads=lambda e: [f"counts/{e.stream}"],
                             step=lambda e, v: {f"counts/{e.stream}":
                                                (v[f"counts/{e.stream}"] or 0) + 1})

        def project(stop: threading.Event) -> None:
            projector().run(stop)

        writers = [threading.Thread(target=write, args=(w,)) for w in range(3)]
        for thread in writers:
            thread.start()
        for _ in range(rounds):
            stop_projector = threading.Event()
            running = threading.Thread(target=project, args=(stop_projector,))
            running.start()
            time.sleep(rng.uniform(0.5, 1.5))
            leader = cluster.leader() or sm.leader()
            victim = leader if leader in PROCESSES else rng.choice(PROCESSES)
            if rng.random() < 0.5:
                cluster.kill(victim, signal.SIGKILL)
                time.sleep(rng.uniform(0.5, 1.5))
                cluster.start(victim)
            else:
                cluster.procs[victim].send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(0.5, 1.5))
                cluster.procs[victim].send_signal(signal.SIGCONT)
            stop_projector.set()                     # the projecting process restarts
            running.join(30)
            assert not running.is_alive()
        stop_writers.set()
        for thread in writers:
            thread.join(180)
        assert not errors, errors
        cluster.wait_ready(timeout=30)
        events = sm.events.read_all()
        assert check_events(attempts, events) == []
        assert sum(a.outcome == "ok" for a in attempts) == len(attempts)
        final = threading.Event()
        tail = threading.Thread(target=project, args=(final,))
        tail.start()
        wait_for(lambda: projector().checkpoint() == events[-1].position, timeout=60)
        final.set()
        tail.join(30)
        counts = sm.get_state(keys=[f"counts/{s}" for s in {e.stream for e in events}])
        assert check_projection(events, counts, replay) == []
