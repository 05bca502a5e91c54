"""Raw PySyncObj 0.3.17: a minimal replicated dict with FileJournal, batched or not.

One member runs in this process (the driver calls its ``@replicated`` methods, with
``sync=True`` or a callback), two run as :mod:`benchmarks.node` children. All settings are
PySyncObj's defaults except ``appendEntriesUseBatch`` and the journal/dump files.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from pysyncobj import SyncObj
from pysyncobj.config import FAIL_REASON

from benchmarks.common import CLEANUP, Child, log, wait_for
from benchmarks.node import Store, TaskRunner, pysyncobj_conf
from benchmarks.workloads import System
from hastate.testing import free_port


class PySyncObjCluster:
    """Three members: index 0 in process, 1 and 2 as children. Used by throughput and failover."""

    def __init__(self, batch: bool, tag: str) -> None:
        self.batch = batch
        self.workdir = CLEANUP.tempdir(tag)
        self.addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        self.children: dict[int, Child] = {}
        self.so: SyncObj | None = None
        self.store = Store()
        self.tasks: TaskRunner | None = None

    # -- members --------------------------------------------------------------------------
    def child_argv(self, i: int) -> list[str]:
        argv = ["pysyncobj", "--self", self.addrs[i],
                "--peers", ",".join(a for j, a in enumerate(self.addrs) if j != i),
                "--data-dir", str(self.workdir / f"n{i}")]
        return argv + ([] if self.batch else ["--no-batch"])

    def start_child(self, i: int) -> None:
        self.children[i] = Child(self.child_argv(i), self.workdir / f"n{i}.log")
        self.children[i].start()

    def start(self) -> None:
        for i in (1, 2):
            self.start_child(i)
        self.so = SyncObj(self.addrs[0], self.addrs[1:],
                          pysyncobj_conf(self.workdir / "n0", self.batch), consumers=[self.store])
        self.tasks = TaskRunner(self.so)
        wait_for(lambda: self.so._getLeader() is not None and self.so.isReady(), 30,
                 "a PySyncObj leader")

    def stop(self) -> None:
        if self.so is not None:
            self.so.destroy()
            self.so = None
        for child in self.children.values():
            child.stop()
        self.children.clear()
        CLEANUP.remove_dir(self.workdir)

    # -- views ----------------------------------------------------------------------------
    def leader_index(self) -> int | None:
        leader = self.so._getLeader() if self.so is not None else None
        if leader is None:
            return None
        addr = str(getattr(leader, "address", leader))
        return self.addrs.index(addr) if addr in self.addrs else None

    def status(self, i: int) -> dict[str, Any]:
        if i == 0:
            st = self.so.getStatus()
            return {k: (v if isinstance(v, (int, float, bool, str)) or v is None else str(v))
                    for k, v in st.items()}
        return self.children[i].request({"op": "status"})

    def transfer_to(self, target: int, timeout: float = 20.0) -> None:
        """Move leadership to member ``target`` (asks the current leader, in or out of process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader_index()
            if leader == target and self._leads(target):
                return
            if leader is not None:
                if leader == 0:
                    self.tasks.call(lambda: self.so.transferLeadership(self.addrs[target]))
                elif leader in self.children and self.children[leader].alive:
                    self.children[leader].request({"op": "transfer", "to": self.addrs[target]})
            time.sleep(0.3)
        raise TimeoutError(f"PySyncObj leadership did not move to member {target}")

    def _leads(self, i: int) -> bool:
        try:
            return self.status(i).get("state") == 2  # _RAFT_STATE.LEADER
        except Exception:
            return False

    def terms(self) -> dict[str, int]:
        out = {"n0": self.so.raftCurrentTerm}
        for i, child in self.children.items():
            if child.alive:
                try:
                    out[f"n{i}"] = int(child.request({"op": "status"}, timeout=5)["raft_term"])
                except Exception:
                    pass
        return out


class PySyncObjSystem(System):
    """Raw PySyncObj as a benchmarked system."""

    def __init__(self, batch: bool = True) -> None:
        self.batch = batch
        self.name = "pysyncobj" if batch else "pysyncobj-nobatch"
        self.client = (f"in-process SyncObj member (appendEntriesUseBatch={batch}), "
                       "@replicated set(sync=True) / callback=")
        self.cluster: PySyncObjCluster | None = None
        self.submit = self._submit

    def start(self) -> None:
        self.cluster = PySyncObjCluster(self.batch, self.name)
        self.cluster.start()
        self.ensure_leader()
        log(f"{self.name}: 3 members up, leader in process")

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    def ensure_leader(self) -> None:
        if self.cluster.leader_index() != 0 or not self.cluster.so._isLeader():
            self.cluster.transfer_to(0)
        wait_for(lambda: self.cluster.so._isLeader(), 10, "in-process PySyncObj leader")

    def put(self, key: str, value: bytes) -> None:
        self.cluster.store.set(key, value, sync=True, timeout=10)

    def _submit(self, key: str, value: bytes, done: Callable[[bool], None]) -> None:
        self.cluster.store.set(key, value,
                               callback=lambda _res, err: done(err == FAIL_REASON.SUCCESS))

    def get(self, key: str, linearizable: bool) -> Any:
        store = self.cluster.store
        return store.get(key, sync=True, timeout=10) if linearizable else store.get_local(key)

    def server_pids(self) -> list[int]:
        return [c.pid for c in self.cluster.children.values()]

    def terms(self) -> dict[str, int]:
        return self.cluster.terms()

    def info(self) -> dict[str, Any]:
        return {"client": self.client, "batch": self.batch,
                "settings": "PySyncObj 0.3.17 defaults (appendEntriesPeriod 0.1 s, election "
                            "timeout 0.4-1.4 s), FileJournal (mmap, no fsync), pickle wire"}


