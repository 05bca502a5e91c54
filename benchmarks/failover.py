"""Failover: kill -9 the leader, time until the first write commits on the new leader.

Every system gets the same trial: a member in this process (or, for etcd, an HTTP client)
stays a follower; the leader is a child process. The driver idles for 0.2 s, sends SIGKILL
to the leader (t = 0), then writes through the surviving side in a loop (each system's own
own client, a new attempt every 20 ms, each in its own thread) until one write is
acknowledged: that time is the failover time (``commit_s``). ``first_call_s`` is when a
single blocking call made at the kill returned (the client's own retries included;
``first_call_ok`` says whether it succeeded or gave up). ``elected_s`` is when the in-process member first names a new leader. The
killed member is then restarted on its data directory and must catch up before the next
trial; when the in-process member became leader, leadership is handed back to a child.

hastate runs as :mod:`benchmarks.node` children here (not ``hastate node run``), because the
multi-region runs put a delaying proxy (``tests/chaos/proxy.py``) in front of every member:
peers know a member by the proxy's address while it listens on its own (``--bind``). Each
link delays every chunk by ``rtt/2`` in each direction, so every pair of members sees the
given round trip. The lan runs use the same harness without the proxy.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from typing import Any, Callable

from benchmarks.common import CLEANUP, Child, REPO_ROOT, log, percentile, wait_for
from hastate.testing import free_port

PROBE_INTERVAL = 0.02


def load_proxy_class() -> Any:
    """``TcpProxy`` from tests/chaos/proxy.py, or None when that file does not exist."""
    path = REPO_ROOT / "tests" / "chaos" / "proxy.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("hastate_bench_chaos_proxy", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module.TcpProxy


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sorted(t["commit_s"] for t in trials if t.get("commit_s") is not None)
    el = sorted(t["elected_s"] for t in trials if t.get("elected_s") is not None)
    out: dict[str, Any] = {"trials": len(trials), "ok": len(ok)}
    if ok:
        out.update(p50_s=percentile(ok, 50), p99_s=percentile(ok, 99), min_s=ok[0], max_s=ok[-1])
    if el:
        out.update(elected_p50_s=percentile(el, 50), elected_p99_s=percentile(el, 99))
    fc = sorted(t["first_call_s"] for t in trials if t.get("first_call_s") is not None)
    if fc:
        out.update(first_call_p50_s=percentile(fc, 50), first_call_p99_s=percentile(fc, 99),
                   first_call_failed=sum(1 for t in trials if t.get("first_call_ok") is False))
    out["samples_s"] = [round(t["commit_s"], 4) if t.get("commit_s") is not None else None
                        for t in trials]
    return out


class Probe:
    """Write attempts launched every ``PROBE_INTERVAL`` from the kill on, each in its own thread.

    ``commit_s``: when the first attempt was acknowledged (the cluster accepts writes again,
    whatever one client's retry policy). ``first_call_s``: when the attempt started at the
    kill returned, i.e. what a single blocking client calling once at t = 0 waits (its own
    retries included).
    """

    def __init__(self, write: Callable[[int], None], t0: float, limit: float = 60.0) -> None:
        self.write, self.t0, self.limit = write, t0, limit
        self.done: dict[int, float | None] = {}
        self.returned: dict[int, float] = {}
        self.ok = threading.Event()
        self.first_returned = threading.Event()
        self.lock = threading.Lock()
        self.first = 0

    def _attempt(self, n: int) -> None:
        try:
            self.write(n)
            t: float | None = time.perf_counter() - self.t0
        except Exception:
            t = None
        with self.lock:
            self.done[n] = t
            self.returned[n] = time.perf_counter() - self.t0
        if n == self.first:
            self.first_returned.set()
        if t is not None:
            self.ok.set()

    def run(self, k: int) -> float:
        self.first = k * 100000
        n = 0
        while not self.ok.is_set():
            if time.perf_counter() - self.t0 > self.limit:
                raise TimeoutError(f"no write acknowledged within {self.limit}s of the kill")
            threading.Thread(target=self._attempt, args=(self.first + n,), daemon=True).start()
            n += 1
            self.ok.wait(PROBE_INTERVAL)
        with self.lock:
            return min(t for t in self.done.values() if t is not None)

    def first_call(self, timeout: float = 15.0) -> tuple[float | None, bool]:
        """(seconds until the call made at the kill returned, whether it succeeded)."""
        self.first_returned.wait(timeout)
        with self.lock:
            return self.returned.get(self.first), self.done.get(self.first) is not None


def _watch(pred: Callable[[], bool], t0: float, box: list[float], limit: float = 60.0,
           interval: float = 0.002) -> None:
    while time.perf_counter() - t0 < limit:
        try:
            if pred():
                box.append(time.perf_counter() - t0)
                return
        except Exception:
            pass
        time.sleep(interval)


# -- hastate ------------------------------------------------------------------------------------
class HastateChildCluster:
    """n1 = in-process StateManager, n2/n3 = benchmarks.node children; optional delay proxy."""

    def __init__(self, profile: str, rtt_ms: float) -> None:
        from hastate import StateManager
        self.profile = profile
        self.workdir = CLEANUP.tempdir(f"failover-hastate-{profile}")
        self.ids = ["n1", "n2", "n3"]
        self.real = {i: f"127.0.0.1:{free_port()}" for i in self.ids}
        self.ident = dict(self.real)
        self.proxy = None
        if rtt_ms > 0:
            proxy_cls = load_proxy_class()
            self.proxy = proxy_cls()
            self.proxy.start()
            CLEANUP.hook(self.proxy.close)
            for i in self.ids:
                port = self.proxy.add_link(i, int(self.real[i].rsplit(":", 1)[1]),
                                           delay_ms=rtt_ms / 2)
                self.ident[i] = f"127.0.0.1:{port}"
        self.children: dict[str, Child] = {}
        self.sm = StateManager("n1", self.ident, data_dir=self.workdir / "n1", profile=profile,
                               cluster_name="bench-failover")
        if self.proxy is not None:
            from benchmarks.node import rebind
            rebind(self.sm, self.real["n1"])

    def start_child(self, i: str) -> None:
        argv = ["hastate", "--id", i, "--peers-json", json.dumps(self.ident),
                "--data-dir", str(self.workdir / i), "--profile", self.profile]
        if self.proxy is not None:
            argv += ["--bind", self.real[i]]
        self.children[i] = Child(argv, self.workdir / f"{i}.log")
        self.children[i].start()

    def start(self) -> None:
        for i in ("n2", "n3"):
            self.start_child(i)
        self.sm.start()
        self.sm.wait_ready(60)

    def stop(self) -> None:
        try:
            self.sm.stop()
        finally:
            for child in self.children.values():
                child.stop()
            if self.proxy is not None:
                self.proxy.close()
            CLEANUP.remove_dir(self.workdir)

    def settle(self) -> str:
        """All three up and caught up, a child leading; returns the leader's id."""
        sm = self.sm
        wait_for(lambda: sm.leader() is not None, 30, "a hastate leader")
        if sm.leader() == "n1":
            sm.trigger_failover("n2", timeout=20)
        leader = wait_for(lambda: sm.leader() if sm.leader() in ("n2", "n3") else None, 20,
                          "a child hastate leader")
        wait_for(lambda: self.children[leader].request({"op": "status"}).get("is_leader"), 20,
                 "the child leader's lease")
        def caught_up() -> bool:
            st = self.children[leader].request({"op": "status"})
            return all(p.get("lag") == 0 for p in st["peers"].values()) and \
                sm.node.syncobj.raftLastApplied >= st["commit_index"]
        wait_for(caught_up, 30, "all hastate members caught up", interval=0.05)
        return leader

    def trial(self, k: int) -> dict[str, Any]:
        sm = self.sm
        leader = self.settle()
        time.sleep(0.2)
        elected: list[float] = []
        t0 = time.perf_counter()
        self.children[leader].kill9()
        threading.Thread(target=_watch, args=(lambda: sm.leader() not in (None, leader), t0,
                                              elected), daemon=True).start()
        probe = Probe(lambda n: sm.save_state({"probe": n}, timeout=30), t0)
        commit = probe.run(k)
        new_leader = sm.leader()
        self.children[leader].kill()
        self.start_child(leader)
        return {"commit_s": commit, "elected_s": elected[0] if elected else None,
                "probe": probe, "killed": leader, "new_leader": new_leader}


# -- raw PySyncObj ------------------------------------------------------------------------------
class PySyncObjFailover:
    def __init__(self) -> None:
        from benchmarks.sys_pysyncobj import PySyncObjCluster
        self.c = PySyncObjCluster(True, "failover-pysyncobj")

    def start(self) -> None:
        self.c.start()

    def stop(self) -> None:
        self.c.stop()

    def settle(self) -> int:
        """A child leads, every member agrees on term and leader and has applied the commit.

        Checked twice 0.3 s apart: a restarted PySyncObj member may still call an election
        (no pre-vote), which would make the in-process view of the leader stale.
        """
        c = self.c

        def view() -> tuple[int, int] | None:
            leader = c.leader_index()
            if leader not in (1, 2):
                return None
            sts = [c.status(i) for i in range(3)]
            if sts[leader].get("state") != 2 or len({st["raft_term"] for st in sts}) != 1 or \
                    len({st["leader"] for st in sts}) != 1:
                return None
            commit = sts[leader]["commit_idx"]
            if any(st["last_applied"] < commit for st in sts):
                return None
            return leader, sts[0]["raft_term"]

        deadline = time.monotonic() + 60
        first = None
        while time.monotonic() < deadline:
            leader = c.leader_index()
            if leader == 0:
                try:
                    c.tasks.call(lambda: c.so.transferLeadership(c.addrs[1]))
                except TimeoutError:
                    pass
                first = None
                time.sleep(0.3)
                continue
            try:
                now = view()
            except Exception:
                now = None
            if now is not None and now == first:
                return now[0]
            first = now
            time.sleep(0.3)
        raise TimeoutError("PySyncObj cluster did not settle")

    def trial(self, k: int) -> dict[str, Any]:
        c = self.c
        leader = self.settle()
        time.sleep(0.2)
        elected: list[float] = []
        t0 = time.perf_counter()
        c.children[leader].kill9()
        threading.Thread(target=_watch, args=(lambda: c.leader_index() not in (None, leader), t0,
                                              elected), daemon=True).start()
        probe = Probe(lambda n: c.store.set("probe", n, sync=True, timeout=30), t0)
        commit = probe.run(k)
        c.children[leader].kill()
        c.start_child(leader)
        return {"commit_s": commit, "elected_s": elected[0] if elected else None,
                "probe": probe, "killed": leader}


# -- etcd ---------------------------------------------------------------------------------------
class EtcdFailover:
    def __init__(self) -> None:
        from benchmarks.sys_etcd import EtcdCluster
        self.c = EtcdCluster("failover-etcd")

    def start(self) -> None:
        self.c.start()

    def stop(self) -> None:
        self.c.stop()

    def trial(self, k: int) -> dict[str, Any]:
        import base64
        c = self.c
        for i in range(3):
            wait_for(lambda i=i: c.healthy(i), 30, f"etcd member {i} healthy")
        leader = wait_for(lambda: (c.leader_index(),) if c.leader_index() is not None else None,
                          30, "an etcd leader")[0]

        def caught_up() -> bool:
            idx = [int(c.status(i)["raftAppliedIndex"]) for i in range(3)]
            return max(idx) - min(idx) == 0
        wait_for(caught_up, 30, "etcd members caught up", interval=0.05)
        survivor = (leader + 1) % 3
        time.sleep(0.2)
        key = base64.b64encode(b"probe").decode()

        def write(n: int) -> None:
            value = base64.b64encode(str(n).encode()).decode()
            c.call(survivor, "/v3/kv/put", {"key": key, "value": value}, timeout=10)
        others = [i for i in range(3) if i != leader]

        def new_leader() -> bool:
            for i in others:
                st = c.status(i, timeout=0.5)
                if st.get("leader") and st["leader"] != old_id:
                    return True
            return False
        old_id = c.status(leader)["header"]["member_id"]
        elected: list[float] = []
        t0 = time.perf_counter()
        c.procs[leader].kill()
        threading.Thread(target=_watch, args=(new_leader, t0, elected, 60.0, 0.01),
                         daemon=True).start()
        probe = Probe(write, t0)
        commit = probe.run(k)
        c.procs[leader].wait(5)
        c.start_member(leader)
        return {"commit_s": commit, "elected_s": elected[0] if elected else None,
                "probe": probe, "killed": leader}


def run_trials(name: str, harness: Any, trials: int) -> dict[str, Any]:
    """Start ``harness``, run ``trials`` kill -9 trials, stop it; summary with samples."""
    log(f"failover {name}: {trials} trials")
    results: list[dict[str, Any]] = []
    t_start = time.monotonic()
    harness.start()
    try:
        for k in range(trials):
            try:
                results.append(harness.trial(k))
            except Exception as exc:
                log(f"  failover {name} trial {k} failed: {exc!r}")
                results.append({"commit_s": None, "error": repr(exc)})
            r = results[-1]
            if r.get("commit_s") is not None:
                el = r.get("elected_s")
                log(f"  {name} trial {k + 1}/{trials}: commit {r['commit_s']:.3f} s"
                    + (f", elected {el:.3f} s" if el is not None else ""))
        # single blocking calls made at the kill may still be waiting (etcd: its 7 s
        # request timeout); collect them now, before the cluster goes away
        deadline = time.monotonic() + 15
        for r in results:
            probe = r.pop("probe", None)
            if probe is not None:
                r["first_call_s"], r["first_call_ok"] = probe.first_call(
                    max(0.0, deadline - time.monotonic()))
    finally:
        harness.stop()
    summary = summarize(results)
    summary["wall_s"] = time.monotonic() - t_start
    summary["details"] = results
    return summary
