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
import shutil
import subprocess
import threading
import time
from typing import Any

from hastate.testing.stdio import kill_and_reap

from benchmarks.common import CLEANUP, free_port, log, wait_for
from benchmarks.workloads import System

ETCD = "etcd"


def etcd_binary() -> str | None:
    return shutil.which(ETCD)


def etcd_version() -> str:
    try:
        out = subprocess.run([ETCD, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].split(":", 1)[1].strip()
    except Exception:
        return "unknown"


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


class EtcdCluster:
    """Three etcd members as child processes (restartable one by one for failover trials)."""

    def __init__(self, tag: str = "etcd") -> None:
        self.workdir = CLEANUP.tempdir(tag)
        self.names = ["e0", "e1", "e2"]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_ports = [free_port() for _ in self.names]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.token = f"hastate-bench-{int(time.time() * 1000)}"

    def argv(self, i: int) -> list[str]:
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports))
        client = f"http://127.0.0.1:{self.client_ports[i]}"
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        return [ETCD, "--name", self.names[i], "--data-dir", str(self.workdir / self.names[i]),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn",
                "--log-outputs", "stderr"]

    def start_member(self, i: int) -> None:
        with open(self.workdir / f"{self.names[i]}.log", "ab") as logf:
            self.procs[i] = CLEANUP.proc(subprocess.Popen(
                self.argv(i), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True))

    def start(self) -> None:
        for i in range(3):
            self.start_member(i)
        for i in range(3):
            wait_for(lambda i=i: self.healthy(i), 30, f"etcd member {i} healthy")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            kill_and_reap(proc)
        self.procs.clear()
        CLEANUP.remove_dir(self.workdir)

    def call(self, i: int, path: str, body: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.client_ports[i], timeout=timeout)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"etcd {path} -> HTTP {resp.status}: {data[:200]!r}")
            return json.loads(data)
        finally:
            conn.close()

    def healthy(self, i: int) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.client_ports[i], timeout=2)
        try:
            conn.request("GET", "/health")
            return json.loads(conn.getresponse().read()).get("health") == "true"
        finally:
            conn.close()

    def status(self, i: int, timeout: float = 3.0) -> dict[str, Any]:
        return self.call(i, "/v3/maintenance/status", {}, timeout=timeout)

    def leader_index(self) -> int | None:
        for i, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            try:
                st = self.status(i)
            except Exception:
                continue
            if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                return i
        return None

    def terms(self) -> dict[str, int]:
        out = {}
        for i, proc in self.procs.items():
            if proc.poll() is None:
                try:
                    out[self.names[i]] = int(self.status(i).get("raftTerm", 0))
                except Exception:
                    pass
        return out


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
