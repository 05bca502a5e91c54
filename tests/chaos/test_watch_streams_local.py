"""The watch checker on a real short run without namespaces: three chaos nodes on loopback
record their watch streams while transactions are written, the leader is killed and comes
back; the streams pass, and the same streams with one event dropped are flagged."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from hastate.testing import LocalCluster, free_port, wait_for

from .checkers import check_watch_streams
from .node_main import load_watch_stream

NODE_MAIN = Path(__file__).with_name("node_main.py")


class Nodes:
    """node_main.py processes for a LocalCluster's cluster file, each recording its stream."""

    def __init__(self, workdir: Path) -> None:
        self.cluster = LocalCluster(workdir, 3, name="watchrun")
        self.workdir = workdir
        self.ports = {n: free_port() for n in self.cluster.ids}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str) -> None:
        with open(self.workdir / f"{node}.log", "ab") as out:
            self.procs[node] = subprocess.Popen(
                [sys.executable, str(NODE_MAIN), "--config", str(self.cluster.config_path),
                 "--id", node, "--api-port", str(self.ports[node]), "--compaction", "50",
                 "--watch-out", str(self.stream_path(node))], stdout=out,
                stderr=subprocess.STDOUT)

    def stream_path(self, node: str) -> Path:
        return self.workdir / f"watch-{node}.jsonl"

    def call(self, node: str, method: str, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[node], timeout=10)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body))
            return json.loads(conn.getresponse().read())
        except (OSError, ValueError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def leader(self) -> str | None:
        found = [n for n in self.procs if (self.call(n, "GET", "/status") or {}).get("is_leader")]
        return found[0] if len(found) == 1 else None

    def kill(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    n = Nodes(tmp_path)
    try:
        for node in n.cluster.ids:
            n.start(node)
        wait_for(n.leader, timeout=30)
        yield n
    finally:
        n.stop_all()


def write(nodes: Nodes, via: str, count: int, start: int) -> None:
    for i in range(start, start + count):
        reply = nodes.call(via, "POST", "/txn-write", {"key": f"k{i % 7}", "value": i})
        assert reply and reply["result"] == "ok", reply


def test_streams_of_a_real_run_with_a_leader_kill_pass_and_a_dropped_event_is_flagged(
        nodes: Nodes) -> None:
    leader = nodes.leader()
    other = next(n for n in nodes.cluster.ids if n != leader)
    write(nodes, other, 60, 0)
    nodes.kill(leader)
    wait_for(lambda: nodes.leader() not in (None, leader), timeout=30)
    write(nodes, other, 60, 60)                     # > compaction: the survivors dump
    nodes.start(leader)
    write(nodes, other, 30, 120)
    final = 150                                     # one revision per transaction
    wait_for(lambda: all((nodes.call(n, "GET", "/digest") or {}).get("revision") == final
                         for n in nodes.procs), timeout=30)
    wait_for(lambda: all(load_watch_stream(nodes.stream_path(n)) and
                         load_watch_stream(nodes.stream_path(n))[-1].get("rev") == final
                         for n in nodes.cluster.ids), timeout=30)
    streams = {n: load_watch_stream(nodes.stream_path(n)) for n in nodes.cluster.ids}
    result = check_watch_streams(streams, final)
    assert result.ok, result.summary()
    assert result.revisions == final
    dropped = {n: list(s) for n, s in streams.items()}
    victim = next(i for i, r in enumerate(dropped[other]) if r.get("rev") == 77)
    del dropped[other][victim]                      # negative control: one event lost
    flagged = check_watch_streams(dropped, final)
    assert [(v.node, v.revision) for v in flagged.violations] == [(other, 78)]
