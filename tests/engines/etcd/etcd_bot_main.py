"""A bot process on an etcd-backed cluster file, tracing the intervals it may act as leader.

``python etcd_bot_main.py CLUSTER_FILE INSTANCE_ID TRACE_FILE``: starts the instance's
StateManager, appends its leader intervals to TRACE_FILE (hastate.testing.lease_trace's
line format, on the machine-wide monotonic clock), prints ``{"ready": true}`` and runs until
its stdin closes.
"""

from __future__ import annotations

import json
import sys

from hastate import StateManager
from hastate.testing.lease_trace import IntervalTrace


def main() -> None:
    config, instance, trace = sys.argv[1:4]
    sm = StateManager.from_config(config, instance, serve_http=False)
    sm.engine.election.interval_observers.append(IntervalTrace(trace, instance))
    sm.start()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.read()
    sm.stop()


if __name__ == "__main__":
    main()
