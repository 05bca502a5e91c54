"""etcd (Debian's ``etcd-server``): three members on loopback, driven over the v3 JSON gateway.

The benchmark starts the members itself on free 127.0.0.1 ports with temporary data
directories (nothing else is listened on or contacted) and stops them afterwards. The
driver uses one keep-alive :class:`http.client.HTTPConnection` per thread to the leader's
client URL: ``POST /v3/kv/put`` / ``/v3/kv/range`` with base64 keys and values (range with
``serializable`` for local reads). etcd fsyncs its WAL before acknowledging, at its defaults
(heartbeat 100 ms, election timeout 1000 ms).
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from typing import Any

from hastate.testing import etcd as testing_etcd

from benchmarks.common import CLEANUP, log, wait_for
from benchmarks.workloads import System


def etcd_binary() -> str | None:
    return testing_etcd.etcd_binary()


def etcd_version() -> str:
    return testing_etcd.etcd_version()


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


class EtcdCluster(testing_etcd.EtcdCluster):
    """hastate.testing's three-member cluster, its processes and data dir under CLEANUP."""

    def __init__(self, tag: str = "etcd") -> None:
        super().__init__(CLEANUP.tempdir(tag), on_spawn=CLEANUP.proc)

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        for i in range(len(self.names)):
            self.start_member(i)
        for i in range(len(self.names)):
            wait_for(lambda i=i: self.healthy(i), timeout, f"etcd member {i} healthy")
        return self

    def stop(self) -> None:
        super().stop()
        CLEANUP.remove_dir(self.workdir)


class EtcdSystem(System):
    """etcd as a benchmarked system (the driver talks to the leader member)."""

    name = "etcd"
    client = ("http.client keep-alive HTTP/1.1 to the v3 JSON gateway (POST /v3/kv/put, "
              "/v3/kv/range), one connection per driver thread, to the leader")

    def __init__(self) -> None:
        self.cluster: EtcdCluster | None = None
        self.target = 0
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.cluster = EtcdCluster()
        self.cluster.start()
        self.ensure_leader()
        log(f"etcd {etcd_version()}: 3 members up, driving the leader (member {self.target})")

    def stop(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    def ensure_leader(self) -> None:
        leader = wait_for(lambda: self.cluster.leader_index() is not None and
                          (self.cluster.leader_index(),), 30, "an etcd leader")[0]
        if leader != self.target:
            self.target = leader
            with self._lock:
                for conn in self._conns:
                    conn.close()
                self._conns.clear()
            self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.cluster.client_ports[self.target],
                                              timeout=10)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _post(self, path: str, body: str) -> bytes:
        conn = self._conn()
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        if resp.status != 200:
            raise RuntimeError(f"etcd {path}: HTTP {resp.status} {data[:200]!r}")
        return data

    def put(self, key: str, value: bytes) -> None:
        self._post("/v3/kv/put", '{"key":"%s","value":"%s"}' % (_b64(key), _b64(value)))

    def get(self, key: str, linearizable: bool) -> Any:
        body = '{"key":"%s"%s}' % (_b64(key), "" if linearizable else ',"serializable":true')
        kvs = json.loads(self._post("/v3/kv/range", body)).get("kvs") or []
        return base64.b64decode(kvs[0]["value"]) if kvs else None

    def server_pids(self) -> list[int]:
        return [p.pid for p in self.cluster.procs.values()]

    def terms(self) -> dict[str, int]:
        return self.cluster.terms()

    def info(self) -> dict[str, Any]:
        return {"client": self.client, "version": etcd_version(),
                "settings": "etcd defaults (heartbeat 100 ms, election 1000 ms, WAL fsync per "
                            "batch, snapshot-count 100000)"}
