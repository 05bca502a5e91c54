"""A chaos-campaign client: drives a register workload against its local node and records
the history.

Started by :mod:`tests.chaos.campaign` in the *same* namespace as its node (``lab.popen``)::

    python client_main.py --name c0 --api-port 8700 --t0-ns T --duration 30 --seed 7 \
        --threads 3 --out history-c0.json [--read-consistency local] [--txn-share 0.3]

Workload (Jepsen's "independent registers"): keys are ``g<gen>k<slot>``, where
``gen = (monotonic_ns - t0) // gen_seconds``, so every client (a separate process, on the
machine-wide ``CLOCK_MONOTONIC``) works on the same few keys at a time and each key gets a
bounded number of operations, which keeps the linearizability search small. Each thread
loops: pick a slot, then read (``consistency``), write a unique value ``"<name>-<seq>"``, or
cas from the last value this client saw for the key to a new unique value. A ``--txn-share``
of the operations goes through transactions instead (``/txn-read``, ``/txn-write``,
``/txn-cas``: a get, a put, a value compare then put), checked as the same register ops;
half of those work on *pair* registers (key ``<key>~pair``: two state keys read and written
together in one transaction, value ``[a, b]``, written as ``[v, v]``), so a transaction
applied in part shows up as a value no one wrote.

Outcomes: the node's ``ok``/``fail``/``unknown`` verdict; a refused connection is ``fail``
(the request never reached the node); a timeout or a connection lost after sending is
``unknown``. Concurrency per key is at most the total number of threads of all clients.
The history (on ``time.monotonic_ns``, shared by every process of the machine) is written
as JSON on exit, including at SIGTERM (operations still in flight are ``unknown``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from history import F, History, Outcome  # noqa: E402  (standalone script next to history.py)


class Api:
    """HTTP calls to the local node, one fresh connection per operation.

    A fresh connection keeps the outcome exact: a refused or timed-out *connect* means the
    node never saw the request (``fail``); anything going wrong after the request was sent
    is ``unknown``. (A kept-alive connection to a node that was killed and restarted would
    turn every first request into a spurious ``unknown``.)
    """

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout

    def call(self, path: str, body: dict[str, Any]) -> tuple[str, Any]:
        """(outcome, reply) where outcome is ok/fail/unknown as seen by the client."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            try:
                conn.connect()
            except OSError as exc:
                return "fail", {"error": f"connect: {exc!r}"}
            try:
                conn.request("POST", path, body=json.dumps(body),
                             headers={"Content-Type": "application/json"})
                reply = json.loads(conn.getresponse().read())
            except (OSError, http.client.HTTPException, ValueError) as exc:
                return "unknown", {"error": repr(exc)}
        finally:
            conn.close()
        result = reply.get("result")
        if result not in ("ok", "fail", "unknown"):
            return "unknown", reply
        return result, reply


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--t0-ns", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--keys", type=int, default=6, help="keys per generation")
    parser.add_argument("--gen-seconds", type=float, default=8.0)
    parser.add_argument("--op-timeout", type=float, default=5.0)
    parser.add_argument("--read-consistency", default="linearizable")
    parser.add_argument("--mix", default="0.4,0.4,0.2", help="read,write,cas weights")
    parser.add_argument("--txn-share", type=float, default=0.0,
                        help="fraction of operations sent as transactions")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    history = History()
    api = Api(args.api_port, args.op_timeout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    end = args.t0_ns + int(args.duration * 1e9)
    weights = [float(w) for w in args.mix.split(",")]
    seq_lock = threading.Lock()
    seq = iter(range(1, 1 << 62))
    last_seen: dict[str, Any] = {}
    counts = {"ok": 0, "fail": 0, "unknown": 0}

    def key_now() -> tuple[str, int]:
        gen = (time.monotonic_ns() - args.t0_ns) // int(args.gen_seconds * 1e9)
        return f"g{gen}", gen

    def worker(index: int) -> None:
        rng = random.Random(f"{args.seed}-{args.name}-{index}")
        while not stop.is_set() and time.monotonic_ns() < end:
            gen_name, _ = key_now()
            key = f"{gen_name}k{rng.randrange(args.keys)}"
            f = rng.choices((F.READ, F.WRITE, F.CAS), weights)[0]
            via = "/"
            if rng.random() < args.txn_share:
                via = "/txn-" if rng.random() < 0.5 else "/pair-"
                if via == "/pair-":
                    key = f"{key}~pair"
            if f is F.READ:
                op = history.invoke(args.name, key, F.READ)
                outcome, reply = api.call(f"{via}read", {"key": key,
                                                         "consistency": args.read_consistency})
                value = reply.get("value") if outcome == "ok" else None
                if outcome == "ok":
                    last_seen[key] = value
                # A read that did not answer says nothing: record it as failed.
                history.complete(op, Outcome.OK if outcome == "ok" else Outcome.FAIL, value)
            else:
                with seq_lock:
                    value = f"{args.name}-{next(seq)}"
                if via == "/pair-":
                    value = [value, value]
                if f is F.WRITE:
                    op = history.invoke(args.name, key, F.WRITE, value)
                    outcome, reply = api.call(f"{via}write", {"key": key, "value": value})
                else:
                    expected = last_seen.get(key)
                    op = history.invoke(args.name, key, F.CAS, [expected, value])
                    outcome, reply = api.call(f"{via}cas", {"key": key, "expected": expected,
                                                            "new": value})
                if outcome == "ok":
                    last_seen[key] = value
                history.complete(op, Outcome(outcome))
            counts[outcome] += 1
            if outcome != "ok":
                stop.wait(0.05)  # do not spin against a dead or isolated node

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Bounded: every call ends within op_timeout.
        thread.join(args.duration + args.op_timeout + 30)
    tmp = args.out + ".tmp"
    history.save(Path(tmp))
    os.replace(tmp, args.out)
    print(json.dumps({"client": args.name, **counts}), flush=True)


if __name__ == "__main__":
    main()
