"""Writing a node's dump (log compaction) without stalling the Raft thread.

By default the Raft thread forks: the child holds a copy-on-write image of the state as of
the dump's index, encodes and writes it (same checksummed container as always) and exits,
while the parent goes on ticking; neither the copy nor the encode holds the parent's GIL
(Redis does the same; PySyncObj's ``useFork`` path forks too, but only for its own pickle
format). The compaction thread only waits for the child. If the child fails (crash, kill,
full disk) the parent keeps its journal, writes the next dump on a thread from a shallow
copy taken on the Raft thread, and forks again after that.

The child runs at a lower CPU priority (``DUMP_NICENESS``): on a machine with few cores,
a child encoding a large state for seconds would otherwise take a core from the Raft
threads of this node and of the nodes beside it, and writes would wait for it.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from hastate._fsutil import atomic_write
from hastate.errors import HAStateError
from hastate.state.dump import encode_dump
from hastate.state.machine import Capture, ReplicatedState

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: How much nicer than its node the dump child runs (os.nice increment).
DUMP_NICENESS = 10


class DumpChildError(HAStateError):
    """The forked dump writer did not finish; the journal is kept and the next dump retried."""


class DumpWriter:
    """Prepares dumps of ``machine`` into ``path`` for ``HastateSyncObj``'s compaction.

    :meth:`prepare` runs on the Raft thread at the dump's index and returns the slow part,
    which ``HastateSyncObj`` runs on its compaction thread (raising keeps the journal).
    """

    def __init__(self, machine: ReplicatedState, path: Path, *, cluster: str, node_id: str,
                 fork: bool = hasattr(os, "fork")) -> None:
        self.machine = machine
        self.path = path
        self.cluster = cluster
        self.node_id = node_id
        self.fork = fork
        self.forked = 0
        self.in_process = 0
        self.failed = 0
        self._fallback_next = False
        self._child: int | None = None   # a forked child not yet reaped
        self._child_lock = threading.Lock()

    def stats(self) -> dict[str, int]:
        """Dumps written by a forked child, on a thread, and forked ones that failed."""
        return {"forked": self.forked, "in_process": self.in_process, "failed": self.failed}

    def prepare(self, last: tuple, prev: tuple, members: list) -> Callable[[], None]:
        """Raft thread: fix the state at ``last``; return the write for the compaction thread."""
        raft = {"last": list(last), "prev": list(prev), "cluster": members}
        created_at = time.time()
        if self.fork and not self._fallback_next:
            pid = self._fork(raft, last, created_at)
            if pid is not None:
                self._child = pid
                return lambda: self._wait(pid)
        self._fallback_next = False
        capture = self.machine.capture()

        def write() -> None:
            self.write(capture, raft, last, created_at)
            self.in_process += 1
        return write

    def write(self, capture: Capture, raft: dict, last: tuple, created_at: float) -> None:
        """Encode ``capture`` with the Raft position and write it durably to ``path``."""
        body = {"state": capture.body(lazy=True), "raft": raft}
        _, blob = encode_dump(body, cluster=self.cluster, index=last[1], term=last[2],
                              keys=len(capture), extra={"node": self.node_id},
                              created_at=created_at)
        atomic_write(self.path, blob)

    def _fork(self, raft: dict, last: tuple, created_at: float) -> int | None:
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            logger.warning("cannot fork the dump writer; writing on a thread",
                           extra={"error": repr(exc)})
            return None
        if pid:
            return pid
        code = 1
        try:  # the child: never returns to the caller
            _die_with(parent)
            _lower_priority()
            gc.disable()  # a collection would touch (and so copy) every page of the image
            # Another thread of the parent (a reader) may have held the state's lock at the
            # fork; that thread does not exist here, so the lock would never be released.
            self.machine._lock = threading.RLock()
            self.write(self.machine.capture(), raft, last, created_at)
            code = 0
        except BaseException as exc:
            os.write(2, f"hastate dump child {os.getpid()} failed: {exc!r}\n".encode())
        finally:
            os._exit(code)

    def _wait(self, pid: int) -> None:
        """Compaction thread: wait for the child; raise if it did not write the dump."""
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)   # exited, still waitable
        with self._child_lock:      # reaped only once abort() can no longer signal it
            self._child = None
            _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            self.forked += 1
            return
        self.failed += 1
        self._fallback_next = True
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        raise DumpChildError(f"dump child {pid} ended with {how}; the journal is kept and the "
                             "next dump is written on a thread")

    def abort(self, timeout: float = 5.0) -> None:
        """Kill a dump child still running and wait until it has exited (the compaction
        thread reaps it, and keeps the journal). The node calls this as it stops: the child
        holds copies of the node's sockets, so a restart in this process could not bind its
        ports while the child lived."""
        with self._child_lock:
            pid = self._child
            if pid is None:
                return
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                    return
            except ChildProcessError:   # reaped meanwhile
                return
            time.sleep(0.005)
        logger.warning("the dump child did not exit after SIGKILL", extra={"pid": pid})


def _lower_priority() -> None:
    """Let the node's own threads (and its neighbours') have the CPU before the dump."""
    try:
        os.nice(DUMP_NICENESS)
    except OSError:
        pass


def _die_with(parent: int) -> None:
    """Linux: the child gets SIGKILL when the parent's forking thread ends.

    Otherwise a child outliving a killed node could rename an older dump over one written
    by the restarted node, after that node had already dropped the journal behind it.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
