"""A raw PySyncObj node with a replicated counter on SecureTransport, driven over stdin/stdout.

Run as ``python node_main.py '<json spec>'``; the spec gives the node's address, the other
addresses, the TransportSecurity fields (``psk_hex`` for the key) and SyncObj conf overrides.
Each stdin line is a JSON request ``{"op": ...}``; each answer is one JSON line on stdout.
Logs go to stderr (the tests keep them in a file and read refusal reasons from it).
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import time
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode
from pysyncobj.transport import TCPTransport

from hastate.consensus.transport import (SecureTransport, TransportSecurity,
                                         make_transport_class)


class Counter(SyncObj):
    """A replicated counter plus a replicated blob setter (to push large entries)."""

    def __init__(self, self_address: str, others: list[str], conf: SyncObjConf,
                 transport_class: type) -> None:
        self.value = 0
        self.blob_sizes: list[int] = []
        super().__init__(self_address, others, conf, transportClass=transport_class)

    @replicated
    def incr(self, by: int) -> int:
        self.value += by
        return self.value

    @replicated
    def put_blob(self, blob: bytes) -> int:
        self.blob_sizes.append(len(blob))
        return len(blob)


class Driver:
    """Owns the node and answers requests; extension messages are sent on the tick thread."""

    def __init__(self, spec: dict[str, Any]) -> None:
        sec = dict(spec["security"])
        if "psk_hex" in sec:
            sec["psk"] = bytes.fromhex(sec.pop("psk_hex"))
        self.received: list[dict[str, Any]] = []
        self.outbox: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self.secure_class: type[SecureTransport] | None = None
        if sec["mode"] == "upstream":  # PySyncObj's own pickle transport, for benchmarks
            transport_class: type = TCPTransport
        else:
            transport_class = self.secure_class = make_transport_class(
                TransportSecurity(**sec), self.on_extension)
        conf = SyncObjConf(**spec.get("conf", {}))
        self.node = Counter(spec["self"], spec["others"], conf, transport_class)
        self.node.addOnTickCallback(self.flush_outbox)

    def transport(self) -> SecureTransport:
        assert self.secure_class is not None and self.secure_class.instance is not None
        return self.secure_class.instance

    def on_extension(self, node: TCPNode, message: dict[str, Any]) -> None:
        self.received.append({"from": node.address, **message})
        if message["type"] == "hastate_lease_ping":
            self.transport().send_extension(
                node.address, {"type": "hastate_lease_pong", "term": message["term"],
                               "sent": message["sent"]})

    def flush_outbox(self) -> None:
        while self.outbox:
            address, message = self.outbox.popleft()
            self.transport().send_extension(address, message)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        node = self.node
        if op == "status":
            leader = node._getLeader()
            return {"leader": None if leader is None else str(leader),
                    "is_leader": node._isLeader(), "value": node.value,
                    "ready": node.isReady(), "blobs": node.blob_sizes,
                    "received": self.received}
        if op == "incr":
            return {"value": node.incr(request.get("by", 1), sync=True,
                                       timeout=request.get("timeout", 5.0))}
        if op == "blob":
            return {"size": node.put_blob(b"b" * request["size"], sync=True,
                                          timeout=request.get("timeout", 5.0))}
        if op == "send_ext":
            self.outbox.append((request["to"], request["message"]))
            return {"queued": True}
        if op == "bench_seq":
            latencies = []
            for _ in range(request["n"]):
                start = time.perf_counter()
                node.incr(1, sync=True, timeout=5.0)
                latencies.append(time.perf_counter() - start)
            return {"latencies": latencies}
        if op == "bench_pipe":
            return {"seconds": self.pipelined(request["n"])}
        raise ValueError(f"unknown op {op}")

    def pipelined(self, count: int) -> float:
        """Issue ``count`` async increments; return seconds until all are committed."""
        done: list[int] = []

        def on_result(result: Any, error: Any) -> None:
            done.append(error)

        start = time.perf_counter()
        for _ in range(count):
            self.node.incr(1, callback=on_result)
        while len(done) < count:
            time.sleep(0.001)
        elapsed = time.perf_counter() - start
        if any(done):
            raise RuntimeError(f"{sum(1 for e in done if e)} pipelined writes failed")
        return elapsed


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    driver = Driver(json.loads(sys.argv[1]))
    print(json.dumps({"started": True}), flush=True)
    for line in sys.stdin:
        try:
            answer = driver.handle(json.loads(line))
        except Exception as exc:  # reported to the test, which decides
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
