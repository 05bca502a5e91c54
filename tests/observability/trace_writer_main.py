"""A cluster member that makes one traced write as a follower, then exits.

    python trace_writer_main.py --config cluster.toml --id instance-1

Tracing is configured exactly as ``hastate node run`` does it (from OTEL_* variables). The
write runs inside the bot's own span; prints one JSON line: trace id, revision, leader.
"""

from __future__ import annotations

import argparse
import json
import time

from opentelemetry import trace

from hastate import StateManager
from hastate.observability import tracing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--id", required=True)
    args = parser.parse_args()
    shutdown = tracing.configure_from_env(args.id)
    assert shutdown is not None, "OTEL_EXPORTER_OTLP_ENDPOINT must be set"
    sm = StateManager.from_config(args.config, args.id).start(wait_ready=30)
    try:
        others = [m.id for m in sm.members() if m.id != args.id]
        deadline = time.monotonic() + 30
        while sm.is_leader() or sm.leader() in (None, args.id):
            if time.monotonic() > deadline:
                raise SystemExit("could not become a follower")
            if sm.is_leader():
                sm.trigger_failover(others[0], timeout=10)
            time.sleep(0.05)
        with trace.get_tracer("bot").start_as_current_span("bot.decision") as span:
            revision = sm.save_state({"model_version": "v2"})
        print(json.dumps({"trace_id": f"{span.get_span_context().trace_id:032x}",
                          "revision": revision, "leader": sm.leader()}), flush=True)
    finally:
        sm.stop()
        shutdown()


if __name__ == "__main__":
    main()
