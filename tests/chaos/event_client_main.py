"""A chaos-campaign event writer: appends to event streams through its local node and
records every attempt.

Started by :mod:`tests.chaos.campaign` in the namespace of its node (``lab.popen``)::

    python event_client_main.py --index 0 --api-port 8700 --t0-ns T --duration 13 \
        --threads 2 --out events-c0.json

Thread ``t`` of client ``index`` is writer ``w = index * threads + t``
(:func:`hastate.testing.event_checks.writer_append`): on even steps it appends to its own
stream ``writer-<w>`` with the exact expected version, on odd steps to the stream
``shared`` (every writer, ``any``), 1-3 events with ids unique per step. An append whose
outcome is unknown (timeout, node killed, lost connection) is retried with the same ids
until a retry is ``ok`` or the run ends (then it stays ``unknown``): the ids make the
retry idempotent, so an ``ok`` after a retry names the original positions. A wrong
expected version (``fail``) moves the writer on to the stream's actual version. Attempts
are written as JSON on exit, including at SIGTERM (one still in flight is ``unknown``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client_main import Api  # noqa: E402  (standalone script next to client_main.py)

from hastate.testing.event_checks import AppendAttempt, writer_append  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--t0-ns", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--op-timeout", type=float, default=5.0)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between appends")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    api = Api(args.api_port, args.op_timeout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    end = args.t0_ns + int(args.duration * 1e9)
    attempts: list[AppendAttempt] = []
    lock = threading.Lock()

    def running() -> bool:
        return not stop.is_set() and time.monotonic_ns() < end

    def worker(writer: int) -> None:
        expected: Any = "no_stream"
        step = 0
        while running():
            attempt, body = writer_append(writer, step, expected)
            with lock:
                attempts.append(attempt)
            outcome, reply = api.call("/events-append", body)
            if outcome == "unknown":
                # The first try may have applied: only an ok settles it (a refused retry
                # says nothing about the first), so retry the same ids until one is ok.
                while outcome != "ok" and running():
                    stop.wait(0.1)
                    outcome, reply = api.call("/events-append", body)
                outcome = "ok" if outcome == "ok" else "unknown"
            attempt.outcome = outcome
            if outcome == "ok":
                attempt.positions = reply["positions"]
                if step % 2 == 0:
                    expected = reply["versions"][-1]
            elif "actual_version" in reply and step % 2 == 0:
                expected = reply["actual_version"]
                expected = "no_stream" if expected == -1 else expected
            elif outcome == "unknown":
                break                             # the run ended with it unresolved
            step += 1
            stop.wait(args.pause if outcome == "ok" else 0.1)

    threads = [threading.Thread(target=worker, args=(args.index * args.threads + t,),
                                daemon=True) for t in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.duration + args.op_timeout + 30)
    with lock:
        data = [asdict(a) for a in attempts]
    tmp = args.out + ".tmp"
    with open(tmp, "w") as out:
        json.dump(data, out)
    os.replace(tmp, args.out)
    counts = {o: sum(a["outcome"] == o for a in data) for o in ("ok", "fail", "unknown")}
    print(json.dumps({"client": args.index, **counts}), flush=True)


if __name__ == "__main__":
    main()
