"""A traced write from a follower, across real node processes, seen by a real OTLP receiver.

instance-2 and instance-3 are ``hastate node run`` processes and instance-1 a bot process
(trace_writer_main.py); all export spans over OTLP/HTTP to a receiver this test starts, as
``OTEL_EXPORTER_OTLP_ENDPOINT`` tells them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hastate.testing import LocalCluster, wait_for

pytest.importorskip("opentelemetry.sdk", reason="needs the OpenTelemetry SDK: "
                    "pip install -e '.[test]'")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http",
                    reason="needs the OTLP/HTTP exporter: pip install -e '.[test]'")

from otlp_receiver import OtlpReceiver, ReceivedSpan  # noqa: E402

pytestmark = pytest.mark.integration

WRITER = Path(__file__).with_name("trace_writer_main.py")
SERVER, CLIENT, CONSUMER = 2, 3, 5   # OTLP Span.SpanKind values


def _one(spans: list[ReceivedSpan], name: str, instance: str | None = None) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and instance in (None, s.instance)]
    assert len(found) == 1, (name, instance, [(s.name, s.instance) for s in spans])
    return found[0]


def _children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans if s.parent_span_id == parent.span_id}


def test_a_follower_write_is_one_trace_across_the_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = OtlpReceiver().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")   # export within 0.1 s
    cluster = LocalCluster(tmp_path, 3, name="otlp")
    try:
        cluster.start("instance-2")
        cluster.start("instance-3")
        cluster.wait_ready(["instance-2", "instance-3"], timeout=30)
        run = subprocess.run([sys.executable, str(WRITER), "--config", str(cluster.config_path),
                              "--id", "instance-1"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        written = json.loads(run.stdout.strip().splitlines()[-1])
        leader = written["leader"]
        other = ({"instance-2", "instance-3"} - {leader}).pop()

        def complete() -> list[ReceivedSpan]:
            spans = receiver.trace(written["trace_id"])
            names = [s.name for s in spans]
            return spans if names.count("hastate.replica.append") == 2 and \
                names.count("hastate.apply") == 3 and "hastate.leader.commit" in names else []
        spans = wait_for(complete, timeout=30, what="the spans of all three processes")
    finally:
        cluster.stop_all()
        receiver.stop()

    assert {s.instance for s in spans} == {"instance-1", leader, other}
    bot = _one(spans, "bot.decision", "instance-1")
    op = _one(spans, "save_state", "instance-1")
    assert op.parent_span_id == bot.span_id and op.kind == CLIENT
    assert op.attributes["db.system.name"] == "hastate"
    assert op.attributes["db.operation.name"] == "save_state"
    assert op.attributes["db.namespace"] == "otlp"
    assert op.attributes["hastate.revision"] == written["revision"]
    index = op.attributes["hastate.log.index"]
    forward = _one(spans, "hastate.forward", "instance-1")
    assert forward.parent_span_id == op.span_id and forward.kind == CLIENT
    assert forward.attributes["hastate.leader.id"] == leader

    commit = _one(spans, "hastate.leader.commit", leader)
    assert commit.parent_span_id == forward.span_id and commit.kind == SERVER
    assert commit.attributes["hastate.log.index"] == index
    phases = _children(spans, commit)
    assert sorted(phases) == ["hastate.apply", "hastate.journal.fsync", "hastate.queue_wait",
                              "hastate.replicate"]
    assert all(s.instance == leader for s in phases.values())
    queue, fsync = phases["hastate.queue_wait"], phases["hastate.journal.fsync"]
    replicate, apply = phases["hastate.replicate"], phases["hastate.apply"]
    # One clock (one machine), so the processes' timestamps compare: each phase follows the
    # one it depends on (the leader's fsync overlaps replication).
    assert op.start <= forward.start <= commit.start == queue.start <= queue.end <= fsync.start
    assert queue.end <= replicate.start <= replicate.end <= apply.start <= apply.end
    assert fsync.end <= apply.start
    assert apply.end == commit.end <= forward.end <= op.end <= bot.end
    assert set(replicate.attributes["hastate.replicas.acked"]) <= {"instance-1", other}
    assert replicate.attributes["hastate.replicas.acked"]

    for instance in ("instance-1", other):
        replica = _one(spans, "hastate.replica.append", instance)
        assert replica.parent_span_id == forward.span_id and replica.kind == CONSUMER
        assert sorted(_children(spans, replica)) == ["hastate.apply", "hastate.journal.fsync"]
