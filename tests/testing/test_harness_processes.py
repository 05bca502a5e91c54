"""The process harness under every real-process cluster: start, kill, reap, clean up."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from hastate.testing.processes import NodeProcesses
from hastate.testing.stdio import JsonLinesProcess

SLEEPER = [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(60)"]
#: Forks a grandchild that outlives a kill of its parent's pid, as PySyncObj's dump writer.
FORKER = [sys.executable, "-c",
          "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nelse:\n    time.sleep(60)"]
ECHO = [sys.executable, "-c",
        "import json, sys\nprint(json.dumps({'ready': True}), flush=True)\n"
        "for line in sys.stdin:\n"
        "    req = json.loads(line)\n"
        "    if req.get('op') == 'die': sys.exit(3)\n"
        "    if req.get('op') != 'mute': print(json.dumps({'echo': req}), flush=True)\n"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_kill_reaps_the_node_and_its_log_keeps_its_output(tmp_path: Path) -> None:
    nodes = NodeProcesses(tmp_path, ["a", "b"])
    try:
        pids = {i: nodes.spawn(i, SLEEPER).pid for i in nodes.ids}
        deadline = time.monotonic() + 10
        while "up" not in nodes.log("a") and time.monotonic() < deadline:
            time.sleep(0.02)
        nodes.kill("a")
        assert "a" not in nodes.procs and not _alive(pids["a"])
        assert nodes.log("a").strip() == "up" and "--- a\nup" in nodes.logs()
        nodes.signal("b", signal.SIGSTOP)
        nodes.stop_all()                     # a paused node is resumed, then terminated
        assert nodes.procs == {} and not _alive(pids["b"])
    finally:
        nodes.close()


def test_close_kills_what_a_killed_node_forked(tmp_path: Path) -> None:
    nodes = NodeProcesses(tmp_path, ["a"])
    proc = nodes.spawn("a", FORKER)
    time.sleep(0.5)                          # let it fork
    nodes.kill_all()
    assert proc.poll() is not None
    os.killpg(proc.pid, 0)                   # the forked child lives on after kill -9 ...
    nodes.close()                            # ... until the group is killed
    nodes.wait_orphans(timeout=5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


def test_json_lines_child_answers_requests_and_names_itself_when_it_does_not(
        tmp_path: Path) -> None:
    child = JsonLinesProcess(ECHO, tmp_path / "echo.log")
    try:
        assert child.start(10) == {"ready": True} and child.alive
        assert child.request({"op": "x", "n": 1}) == {"echo": {"op": "x", "n": 1}}
        with pytest.raises(TimeoutError, match=rf"child pid {child.pid} did not answer within 0.2s"):
            child.request({"op": "mute"}, timeout=0.2)
        with pytest.raises(RuntimeError, match=rf"child pid {child.pid} exited"):
            child.request({"op": "die"})
    finally:
        child.kill()
    assert not child.alive and child.proc is not None and child.proc.returncode == 3
