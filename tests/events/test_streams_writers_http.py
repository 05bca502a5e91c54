"""Writers in three node processes racing on one namespace over ``POST /v1/events/append``,
retrying unknown outcomes with the same ids (on another node when theirs is gone) while
the leader is SIGKILLed; the final ``$all`` passes the event-history checker."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from hastate.admin_client import call
from hastate.errors import NodeUnreachableError
from hastate.testing import wait_for
from hastate.testing.embedded import EmbeddedCluster
from hastate.testing.event_checks import AppendAttempt, check_events, writer_append

pytestmark = pytest.mark.integration

NODES = ["instance-1", "instance-2", "instance-3"]
APPENDS = 30


def test_writers_on_three_nodes_through_a_leader_kill(tmp_path: Path) -> None:
    with EmbeddedCluster(tmp_path, 3, name="eventhttp").running() as cluster:
        assert cluster.sm is not None
        cluster.make_leader("instance-2")
        attempts: list[AppendAttempt] = []
        errors: list[BaseException] = []
        done = [0]
        lock = threading.Lock()

        def post(node: str, body: dict) -> tuple[int, dict]:
            return call(node, cluster.http[node], "/v1/events/append", body=body,
                        token=cluster.admin_token, timeout=30)

        def write(w: int) -> None:
            node_index = w
            expected = "no_stream"
            try:
                for i in range(APPENDS):
                    attempt, body = writer_append(w, i, expected)
                    with lock:
                        attempts.append(attempt)
                    while True:
                        node = NODES[node_index % 3]
                        try:
                            code, answer = post(node, body)
                        except NodeUnreachableError:
                            node_index += 1          # its node is gone: retry elsewhere
                            continue
                        if code == 503 and answer.get("outcome_unknown"):
                            continue                 # same ids: the retry is idempotent
                        break
                    assert code == 200, (code, answer)
                    attempt.outcome, attempt.positions = "ok", answer["positions"]
                    if attempt.stream != "shared":
                        expected = answer["versions"][-1]
                    with lock:
                        done[0] += 1
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        wait_for(lambda: done[0] >= 20 or errors, timeout=60)
        cluster.kill("instance-2", signal.SIGKILL)
        wait_for(lambda: cluster.sm.leader() in ("instance-1", "instance-3"), timeout=30)
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert done[0] == 3 * APPENDS
        events = cluster.sm.events.read_all()
        assert check_events(attempts, events) == []
        assert len(events) == sum(len(a.ids) for a in attempts)
