"""Dumps written by a forked child: byte-identical to in-process ones, and a crash is survived.

The child is a real fork of this process; a crash is a real SIGKILL of that child.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from hastate import StateManager
from hastate.consensus.dumper import DUMP_NICENESS, DumpChildError, DumpWriter
from hastate.state.codec import Command, encode_value
from hastate.state.dump import decode_dump
from hastate.state.machine import ReplicatedState
from hastate.testing import LocalCluster
from hastate.testing.embedded import EmbeddedCluster

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def filled(keys: int) -> ReplicatedState:
    machine = ReplicatedState()
    for i in range(keys):
        raw = Command(op="update", client=b"c" * 16, seq=i + 1,
                      values={f"k{i}": encode_value(f"k{i}", {"n": i, "pad": "x" * (i % 50)})}
                      ).encode()
        machine.apply_at(i + 1, raw)
    return machine


def test_forked_dump_is_byte_identical_to_an_in_process_one(tmp_path: Path) -> None:
    machine = filled(20_000)
    forked = DumpWriter(machine, tmp_path / "forked.dump", cluster="c", node_id="n1")
    threaded = DumpWriter(machine, tmp_path / "thread.dump", cluster="c", node_id="n1",
                          fork=False)
    at = (b"", 20_000, 3), (b"", 19_999, 3), [{"id": "n1", "raft": "127.0.0.1:1"}]
    real_time = time.time
    try:
        time.time = lambda: 1_700_000_000.0  # the header's created_at, same for both
        write_forked = forked.prepare(*at)
        write_thread = threaded.prepare(*at)
    finally:
        time.time = real_time
    # Changes after prepare() are not in either dump: both hold the state at index 20,000.
    machine.apply_at(20_001, Command(op="delete", client=b"c" * 16, seq=20_001,
                                     keys=("k0",)).encode())
    write_forked()
    write_thread()
    blob = (tmp_path / "forked.dump").read_bytes()
    assert blob == (tmp_path / "thread.dump").read_bytes()
    header, body = decode_dump(blob, source="forked.dump", cluster="c")
    assert header.index == 20_000 and header.keys == 20_000
    assert "k0" in body["state"]["data"] and body["raft"]["last"] == [b"", 20_000, 3]
    assert forked.stats() == {"forked": 1, "in_process": 0, "failed": 0}
    assert threaded.stats() == {"forked": 0, "in_process": 1, "failed": 0}


def test_a_crashing_child_is_survived_and_the_next_dump_falls_back(tmp_path: Path) -> None:
    machine = filled(2_000)
    path = tmp_path / "state.dump"
    writer = DumpWriter(machine, path, cluster="c", node_id="n1")
    parent = os.getpid()
    original = DumpWriter.write

    def crash_in_child(self: DumpWriter, *args: object) -> None:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)   # the child dies mid-dump
        original(self, *args)

    writer.write = crash_in_child.__get__(writer)  # type: ignore[method-assign]
    at = (b"", 2_000, 1), (b"", 1_999, 1), []
    with pytest.raises(DumpChildError, match="signal 9"):
        writer.prepare(*at)()
    assert not path.exists()
    assert writer.stats() == {"forked": 0, "in_process": 0, "failed": 1}
    writer.prepare(*at)()               # the fallback: written on this thread
    assert writer.stats() == {"forked": 0, "in_process": 1, "failed": 1}
    writer.write = original.__get__(writer)  # type: ignore[method-assign]
    writer.prepare(*at)()               # and the next one forks again
    assert writer.stats() == {"forked": 1, "in_process": 1, "failed": 1}
    assert decode_dump(path.read_bytes(), source="x", cluster="c")[0].index == 2_000


def test_a_held_state_lock_does_not_block_the_child(tmp_path: Path) -> None:
    """A reader thread holds the state's lock at the fork: the child must not wait for it."""
    machine = filled(100)
    writer = DumpWriter(machine, tmp_path / "state.dump", cluster="c", node_id="n1")
    holding, release = threading.Event(), threading.Event()

    def reader() -> None:
        with machine._lock:
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=reader)
    thread.start()
    assert holding.wait(5)
    try:
        write = writer.prepare((b"", 100, 1), (b"", 99, 1), [])
        done = threading.Thread(target=write)
        done.start()
        done.join(20)
        assert not done.is_alive() and writer.stats()["forked"] == 1
    finally:
        release.set()
        thread.join()


def test_abort_ends_a_running_child_and_frees_the_sockets_it_inherited(tmp_path: Path) -> None:
    """A dump child holds copies of its node's sockets: while it runs, a node restarted in
    this process cannot listen on its port; abort() (called as the node stops) ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    writer = DumpWriter(filled(10), tmp_path / "state.dump", cluster="c", node_id="n1")
    parent = os.getpid()
    original = DumpWriter.write

    def slow_in_child(self: DumpWriter, *args: object) -> None:
        if os.getpid() != parent:
            time.sleep(60)
        original(self, *args)

    writer.write = slow_in_child.__get__(writer)  # type: ignore[method-assign]
    errors: list[BaseException] = []
    write = writer.prepare((b"", 10, 1), (b"", 9, 1), [])
    compaction = threading.Thread(target=lambda: _catch(write, errors))
    compaction.start()
    listener.close()
    with pytest.raises(OSError):      # the child still listens on the node's port
        socket.create_server(("127.0.0.1", port)).close()
    writer.abort()
    socket.create_server(("127.0.0.1", port)).close()
    compaction.join(10)
    assert not compaction.is_alive()
    assert [type(e) for e in errors] == [DumpChildError] and "signal 9" in str(errors[0])
    assert writer.stats() == {"forked": 0, "in_process": 0, "failed": 1}
    writer.abort()                    # nothing left to end: a no-op


def _catch(call: Callable[[], None], errors: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:
        errors.append(exc)


@pytest.fixture
def crashing_cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, StateManager]]:
    parent = os.getpid()

    def crash_first_child(sm: StateManager) -> None:
        dumper = sm.node.dumper
        original = dumper.write

        def write(*args: object) -> None:
            # The child sees the parent's counters as of the fork: only the first child dies.
            if os.getpid() != parent and dumper.failed == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            original(*args)

        dumper.write = write  # type: ignore[method-assign]

    embedded = EmbeddedCluster(tmp_path, 3, name="forkdump")
    with embedded.running(30, prepare=crash_first_child, log_compaction_entries=300) as c:
        yield c, c.sm


def test_every_node_dumps_by_fork_and_a_node_survives_its_childs_crash(
        crashing_cluster: tuple[LocalCluster, StateManager]) -> None:
    c, sm = crashing_cluster
    deadline = time.monotonic() + 90
    i = 0
    while True:  # the node processes compact every 5,000 entries (the default)
        for n in range(200):  # one at a time: each its own entry (waiting ones share one)
            sm.save_state({f"k{(i + n) % 500}": i + n}, timeout=30)
        i += 200
        dumps = {n: (c.status(n) or {}).get("dumps") or {} for n in ("instance-2", "instance-3")}
        mine = sm.status()["dumps"]
        if mine["failed"] >= 1 and mine["in_process"] >= 1 and mine["forked"] >= 1 and \
                all(d.get("forked", 0) >= 1 for d in dumps.values()):
            break
        assert time.monotonic() < deadline, (mine, dumps)
    # The node kept running, compacted after the crash, and lost nothing it acknowledged.
    assert sm.node.fatal_error is None and sm.node.syncobj.compactions_total >= 2
    sm.save_state({"final": i})
    state = sm.get_state()
    assert state["final"] == i and len(state) == 501
    header, _ = decode_dump((sm.spec.data_dir / "state.dump").read_bytes(), source="dump",
                            cluster=sm.spec.cluster)
    assert 0 < header.index <= sm.status()["applied_index"]   # a log index, not a revision


def test_the_dump_child_runs_nicer_than_its_node(tmp_path: Path) -> None:
    """The child encodes at a lower CPU priority than the node that forked it."""
    machine = filled(10)
    seen = tmp_path / "child-niceness"
    capture = machine.capture

    def capture_noting_priority():  # runs in the child, which then writes the dump
        seen.write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))
        return capture()
    machine.capture = capture_noting_priority  # type: ignore[method-assign]
    writer = DumpWriter(machine, tmp_path / "state.dump", cluster="c", node_id="n1")
    writer.prepare((b"", 10, 1), (b"", 9, 1), [])()
    assert writer.stats()["forked"] == 1
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert int(seen.read_text()) == min(19, own + DUMP_NICENESS) > own
