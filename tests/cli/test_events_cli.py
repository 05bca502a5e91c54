"""``hastate events read|export|tail`` and ``/v1/events`` against a real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

from hastate.events import NewEvent
from hastate.testing.cluster import ADMIN_TOKEN_ENV
from hastate.testing.embedded import EmbeddedCluster


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_read_export_and_tail_print_the_events(ops: EmbeddedCluster) -> None:
    assert ops.sm is not None
    es = ops.sm.events
    es.append("cli-fills", [NewEvent("Filled", {"qty": Decimal("0.25")},
                                     {"correlation_id": "o1"}, id="cli-1")])
    other = es.append("cli-other",
                      [NewEvent("Other", id="cli-2"), NewEvent("Filled", id="cli-3")])
    config = ["--config", str(ops.config_path)]

    out = ops.cli("events", "read", *config, "--stream", "cli-fills")
    assert out.returncode == 0, out.stderr
    (event,) = lines(out.stdout)
    assert (event["type"], event["data"], event["metadata"], event["version"]) == \
        ("Filled", {"qty": "0.25"}, {"correlation_id": "o1"}, 0)

    out = ops.cli("events", "read", *config, "--from", str(other.positions[0]))
    assert [e["id"] for e in lines(out.stdout)] == ["cli-2", "cli-3"]

    out = ops.cli("events", "export", *config)
    exported = lines(out.stdout)
    assert [e["position"] for e in exported] == [e.position for e in es.read_all()]
    assert "exported" in out.stderr

    env = dict(os.environ, **{ADMIN_TOKEN_ENV: ops.admin_token})
    tail = subprocess.Popen([sys.executable, "-m", "hastate", "events", "tail", *config,
                             "--after", str(other.positions[0] - 1), "--count", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        es.append("cli-live", [NewEvent("Live", id="cli-4")])
        stdout, stderr = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, stderr
    assert [e["id"] for e in lines(stdout)] == ["cli-2", "cli-3", "cli-4"]

    refused = ops.cli("events", "read", *config, token="wrong")
    assert refused.returncode != 0 and "refused the admin token" in refused.stderr
