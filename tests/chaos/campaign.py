"""Fault-injection campaigns against a real hastate cluster in network namespaces.

One *run* (:func:`run_campaign`):

1. A :class:`~.netns.NetnsLab` with one namespace per node; in each, a hastate node
   process (``node_main.py``: ``StateManager`` from a cluster file whose Raft addresses are
   the namespace addresses, transport ``psk``, lease trace on) and a client process
   (``client_main.py``) driving a register workload against its local node and recording
   a :class:`~.history.History` on the machine-wide monotonic clock.
2. A :class:`Nemesis` injecting faults from a schedule drawn from the run's seed (printed,
   so ``--seed`` replays it): partitions (isolate one / the leader, majority-minority,
   leader in the minority, bridge on 5 nodes, flapping), one-way drops, kill -9 (one,
   leader, majority, all; isolate the leader then kill its successor) with restart,
   SIGSTOP/SIGCONT of the leader or any node past the election timeout, disk full (each
   data dir is its own small tmpfs). One fault at a time; each is held, healed, then
   followed by a gap.
   Fault *kinds* and their order come from the seed; targets that depend on who leads
   ("the leader") are resolved when the fault starts, so a replay has the same schedule
   but not necessarily the same interleaving.
3. Heal everything, let the clients finish, wait for the cluster to settle, then check:
   linearizability of the merged history (:func:`~.linearizability.check_history`),
   durability against the final state (:func:`~.checkers.check_durability`), lease
   overlap from the nodes' ``HASTATE_LEASE_TRACE`` files
   (:func:`~.checkers.check_lease_overlap`), convergence of every node's
   (applied index, state hash) (:func:`~.checkers.check_convergence`) and the watch
   streams every node recorded from revision 1 (:func:`~.checkers.check_watch_streams`:
   gapless, duplicate-free, the same sequence everywhere, reaching the final revision).
   With ``RunConfig.lease`` (on by default), bots in every node hold TTL keys and the run
   checks that none expired before its TTL or outlived it past the bound
   (:mod:`.lease_workload`, negative controls there too).
   A ``txn_share`` of the client operations are transactions (get / put / value-compare
   then put, half of them on pair registers of two keys changed together), checked by the
   linearizability checker like the others.
4. Write a JSON result to ``results/chaos/`` (and, when a check fails or the run breaks,
   the histories, traces and node logs next to it); the temp dir is always removed.

Negative controls (the checkers must catch known-bad systems):

* :func:`run_local_read_control`: the client of a node that gets isolated reads with
  ``consistency="local"``; the linearizability checker must flag the stale reads.
* :func:`run_raw_kill_all_control`: raw PySyncObj (``tests/consensus`` harness, its
  ``node_main.py --engine raw``) under kill -9 of every node; the durability checker must
  flag the acknowledged writes it loses.

Targeted scenario :func:`run_rejoin_scenario`: the shape of the one violation the campaign
found (an old leader with an uncommitted tail never rejoins a leader elected after the
split; tests/chaos/test_rejoin.py).

Also runnable without pytest, from the repository root:
``python -m tests.chaos.campaign --seed 7 --runs 3 --duration 30 --nodes 3,5``.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import event_campaign
from .checkers import (check_convergence, check_durability, check_lease_overlap,
                       check_watch_streams)
from .history import F, History, Operation, Outcome
from . import lease_workload
from .linearizability import Verdict, check_history
from .netns import NetnsLab
from .node_main import load_watch_stream, with_pair_registers

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
NODE_MAIN = HERE / "node_main.py"
CLIENT_MAIN = HERE / "client_main.py"
REPO = HERE.parents[1]
#: Where run results go (``/results/`` is gitignored); override with HASTATE_CHAOS_RESULTS.
RESULTS_DIR = Path(os.environ.get("HASTATE_CHAOS_RESULTS", REPO / "results" / "chaos"))

RAFT_PORT = 7700
API_PORT = 8700          # on 127.0.0.1 inside every namespace: the same port everywhere
SECRET_ENV = "HASTATE_CHAOS_SECRET"

#: Every fault kind, in a fixed order (the seed shuffles them).
NETWORK_KINDS = ("isolate-one", "isolate-leader", "partition-random",
                 "partition-leader-minority", "bridge", "one-way", "flap")
PROCESS_KINDS = ("kill-one", "kill-leader", "kill-majority", "kill-all", "pause-leader",
                 "pause-one", "isolate-leader-kill-new", "replace-one")
#: Needs RunConfig.tmpfs_mb (each data dir on its own small tmpfs).
DISK_KINDS = ("disk-full-one", "disk-full-leader")
ALL_KINDS = NETWORK_KINDS + PROCESS_KINDS


@functools.cache
def tmpfs_available() -> bool:
    """Whether this process may mount a tmpfs (needed by the disk-full faults)."""
    probe = Path(tempfile.mkdtemp(prefix="hastate-chaos-tmpfs-"))
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                                 capture_output=True, timeout=30).returncode == 0
        if mounted:
            subprocess.run(["umount", str(probe)], capture_output=True, timeout=30)
        return mounted
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@functools.cache
def code_under_test() -> dict[str, Any]:
    """Which hastate the node processes run (they inherit this process's sys.path/PYTHONPATH).

    Other engineers edit ``src/`` while campaigns run, so long campaigns should pin a
    snapshot: ``git archive HEAD src/hastate | tar -x -C DIR --strip-components=1``, put the
    commit id in ``DIR/COMMIT`` and run with ``PYTHONPATH=DIR``.
    """
    import hastate

    package = Path(hastate.__file__).resolve().parent
    info: dict[str, Any] = {"hastate": str(package)}
    pinned = package.parent / "COMMIT"
    if pinned.exists():
        info["commit"] = pinned.read_text().strip()
        info["pinned"] = True
        return info
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                                        capture_output=True, text=True, timeout=10).stdout.strip()
        info["dirty_src"] = bool(subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "src"],
            capture_output=True, text=True, timeout=10).stdout.strip())
    info["pinned"] = False
    return info


def kinds_for(nodes: int, disk: bool = False) -> tuple[str, ...]:
    """Fault kinds that make sense for a cluster of ``nodes`` (disk faults need tmpfs)."""
    return tuple(k for k in ALL_KINDS + (DISK_KINDS if disk else ())
                 if k != "bridge" or nodes >= 5)


# --------------------------------------------------------------------------- configuration


@dataclass
class RunConfig:
    """Everything that defines one run (stored in its result, so it can be replayed)."""

    seed: int
    nodes: int = 3
    duration: float = 30.0          # client workload length (s)
    warmup: float = 1.0             # fault-free start of the workload (s)
    tail: float = 4.0               # fault-free end of the workload, after the heal (s)
    hold: tuple[float, float] = (2.0, 4.5)   # how long a fault is held (s)
    gap: tuple[float, float] = (0.5, 2.0)    # quiet time between faults (s)
    kinds: tuple[str, ...] | None = None     # default: kinds_for(nodes)
    threads: int | None = None      # per client; default 10 // nodes (<= 10 per key)
    keys: int = 6                   # keys per generation
    gen_seconds: float = 8.0        # a key generation's lifetime (s)
    mix: str = "0.4,0.4,0.2"        # read, write, cas weights
    txn_share: float = 0.3          # fraction of client operations sent as transactions
    read_consistency: str = "linearizable"
    local_read_nodes: tuple[str, ...] = ()   # negative control: these clients read "local"
    # Instead of a seeded schedule: (kind, at, hold, target or None).
    fixed_faults: tuple[tuple[str, float, float, str | None], ...] | None = None
    compaction: int | None = None   # log entries between dumps; default drawn from the seed
    write_timeout: float = 3.0
    op_timeout: float = 5.0
    key_budget: float = 5.0         # linearizability search budget per key (s)
    settle_timeout: float = 30.0
    label: str = "campaign"
    tmpfs_mb: int | None = 64       # data dirs on a tmpfs of this size (disk-full faults);
                                    # ignored (no disk faults) where tmpfs cannot be mounted
    # TTL keys held by bots in every node (None: none); see lease_workload.py
    lease: lease_workload.LeaseSettings | None = field(
        default_factory=lease_workload.LeaseSettings)
    events: bool = False            # also the event workload (tests/chaos/event_campaign.py)
    events_bug_nodes: tuple[str, ...] = ()   # negative control: these nodes' subscription
                                             # recorders resume from the head after a restart

    def resolved_tmpfs(self) -> int | None:
        return self.tmpfs_mb if self.tmpfs_mb and tmpfs_available() else None

    def resolved_kinds(self) -> tuple[str, ...]:
        return tuple(self.kinds) if self.kinds else kinds_for(self.nodes,
                                                              bool(self.resolved_tmpfs()))

    def resolved_compaction(self) -> int:
        """Entries between dumps: from the seed unless set (small values mean many dumps
        and snapshot installs on lagging nodes, so kills land during them)."""
        if self.compaction is not None:
            return self.compaction
        return random.Random(f"compaction-{self.seed}").choice((200, 1000, 5000))

    def client_threads(self) -> int:
        return self.threads or max(1, 10 // self.nodes)


@dataclass
class PlannedFault:
    """One entry of the schedule: ``kind`` at ``at`` s after t0, held ``hold`` s."""

    kind: str
    at: float
    hold: float
    salt: int       # seeds the random choices made when the fault starts (targets)
    target: str | None = None   # fixed target for *-one kinds (negative controls)


def plan_schedule(config: RunConfig) -> list[PlannedFault]:
    """The fault schedule of a run, a pure function of its config (and so of its seed).

    Kinds are drawn round-robin from seeded shuffles of the allowed kinds, so a short run
    still sees different kinds and a long one sees each kind about equally often.
    """
    if config.fixed_faults is not None:
        return [PlannedFault(kind, at, hold, i, target) for i, (kind, at, hold, target)
                in enumerate(config.fixed_faults)]
    rng = random.Random(config.seed)
    kinds = list(config.resolved_kinds())
    bag: list[str] = []
    plan = []
    t = config.warmup
    end = config.duration - config.tail
    while True:
        hold = round(rng.uniform(*config.hold), 2)
        if t + hold > end:
            break
        if not bag:
            bag = kinds[:]
            rng.shuffle(bag)
        plan.append(PlannedFault(bag.pop(), round(t, 2), hold, rng.randrange(1 << 30)))
        t += hold + rng.uniform(*config.gap)
    return plan


# --------------------------------------------------------------------------- the cluster


class ChaosCluster:
    """hastate node processes (and their clients) in the namespaces of a :class:`NetnsLab`."""

    def __init__(self, lab: NetnsLab, workdir: Path, *, compaction: int = 1000,
                 write_timeout: float = 3.0, tmpfs_mb: int | None = None,
                 lease: lease_workload.LeaseSettings | None = None) -> None:
        self.lab = lab
        self.workdir = workdir
        self.ids = list(lab.nodes)
        self.compaction = compaction
        self.write_timeout = write_timeout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()
        self.killed: set[str] = set()
        #: Node processes that exited although no fault killed them (a bug, or a fatal error).
        self.crashes: list[str] = []
        self.clients: dict[str, subprocess.Popen[bytes]] = {}
        self.node_args: dict[str, list[str]] = {}   # extra node_main.py arguments per node
        self.config_path = workdir / "cluster.toml"
        self.secret = os.urandom(32).hex()
        lines = ["[cluster]", 'name = "chaos"', 'profile = "lan"', 'transport = "psk"',
                 f'secret_env = "{SECRET_ENV}"', ""]
        for node in self.ids:
            lines += ["[[nodes]]", f'id = "{node}"',
                      f'raft = "{lab.address(node)}:{RAFT_PORT}"',
                      f'data_dir = "{workdir / "data" / node}"', ""]
        self.config_path.write_text("\n".join(lines))
        self.tmpfs_mb = tmpfs_mb
        self.lease = lease
        #: Data dirs mounted on their own small tmpfs (for the disk-full fault).
        self.mounts: list[Path] = []

    def mount(self) -> None:
        """Put every data dir on its own tmpfs of ``tmpfs_mb`` MB (no-op without it)."""
        if not self.tmpfs_mb:
            return
        for node in self.ids:
            path = self.data_dir(node)
            path.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_mb}m", "tmpfs",
                            str(path)], check=True, capture_output=True, timeout=30)
            self.mounts.append(path)

    def data_dir(self, node: str) -> Path:
        return self.workdir / "data" / node

    def fill_disk(self, node: str) -> Path:
        """Fill ``node``'s tmpfs data dir to the last byte; returns the filler to delete."""
        filler = self.data_dir(node) / "filler.bin"
        free = os.statvfs(filler.parent)
        size = free.f_bavail * free.f_frsize
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with contextlib.suppress(OSError):
                os.posix_fallocate(fd, 0, size)
            with contextlib.suppress(OSError):   # whatever fallocate left
                while os.write(fd, b"\0" * 65536):
                    pass
        finally:
            os.close(fd)
        return filler

    def trace_path(self, node: str) -> Path:
        return self.workdir / f"lease-{node}.jsonl"

    def watch_path(self, node: str) -> Path:
        return self.workdir / f"watch-{node}.jsonl"

    def revision(self) -> int | None:
        """The highest cluster revision any running node reports (None: none answers)."""
        found = [d["revision"] for d in (self.call(n, "GET", "/digest", timeout=2.0)
                                         for n in self.ids if self.alive(n)) if d]
        return max(found) if found else None

    def watch_streams(self, final_revision: int | None, timeout: float = 15.0,
                      ) -> dict[str, list[dict[str, Any]]]:
        """Every node's recorded stream, once each reached ``final_revision`` (or timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            streams = {n: load_watch_stream(self.watch_path(n)) for n in self.ids}
            reached = all(s and s[-1].get("rev", s[-1].get("compacted", 0) - 1)
                          >= (final_revision or 0) for s in streams.values())
            if reached or time.monotonic() >= deadline:
                return streams
            time.sleep(0.2)

    # -- node processes ---------------------------------------------------------------------
    def start(self, node: str, join: bool = False) -> None:
        self.killed.discard(node)
        env = dict(os.environ, **{SECRET_ENV: self.secret,
                                  "HASTATE_LEASE_TRACE": str(self.trace_path(node))},
                   **lease_workload.node_env(self.lease))
        with open(self.workdir / f"node-{node}.log", "ab") as out:
            self.procs[node] = self.lab.popen(
                node, [sys.executable, str(NODE_MAIN), "--config", str(self.config_path),
                       "--id", node, "--api-port", str(API_PORT),
                       "--compaction", str(self.compaction),
                       "--write-timeout", str(self.write_timeout),
                       "--watch-out", str(self.watch_path(node)),
                       *lease_workload.node_args(self.lease, self.workdir, node),
                       *self.node_args.get(node, []),
                       *(["--join"] if join else [])],
                stdout=out, stderr=subprocess.STDOUT, env=env)

    def start_all(self) -> None:
        for node in self.ids:
            self.start(node)

    def alive(self, node: str) -> bool:
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def kill(self, node: str) -> None:
        """kill -9 of the node process (``ip netns exec`` execs it: same pid), reaped."""
        self.note_crash(node)
        proc = self.procs.pop(node, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.paused.discard(node)
        self.killed.add(node)

    def wipe(self, node: str) -> None:
        """Delete everything in ``node``'s data dir (a replacement machine's empty disk)."""
        for path in self.data_dir(node).iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def change_members(self, op: str, node: str, timeout: float = 20.0) -> str:
        """Ask the current leader to add or remove ``node``, retrying while leadership moves."""
        deadline = time.monotonic() + timeout
        last: Any = "no leader"
        while time.monotonic() < deadline:
            leader = self.wait_leader(timeout=max(0.1, deadline - time.monotonic()),
                                      exclude=node if op == "remove" else None)
            if leader is None:
                break
            reply = self.call(leader, "POST", "/members", {"op": op, "id": node}, timeout=15)
            if reply is not None and reply.get("result") == "ok":
                return f"{op} {node} via {leader} at index {reply['index']}"
            last = reply
            time.sleep(0.2)
        raise RuntimeError(f"membership {op} of {node} failed: {last}")

    def pause(self, node: str) -> None:
        if self.alive(node):
            self.procs[node].send_signal(signal.SIGSTOP)
            self.paused.add(node)

    def resume(self, node: str) -> None:
        if node in self.paused:
            self.paused.discard(node)
            if self.alive(node):
                self.procs[node].send_signal(signal.SIGCONT)

    def heal_all(self) -> None:
        """Heal the network, resume paused nodes, restart dead ones."""
        self.lab.heal()
        for node in list(self.paused):
            self.resume(node)
        for node in self.ids:
            if not self.alive(node):
                self.note_crash(node)
                self.procs.pop(node, None)
                self.start(node)

    def note_crash(self, node: str) -> None:
        """Record ``node`` if its process is gone without the nemesis having killed it."""
        proc = self.procs.get(node)
        if node not in self.killed and proc is not None and proc.poll() is not None:
            self.crashes.append(f"{node} exited with {proc.returncode} without being killed; "
                                f"log tail: {self.log_tail(node, 1500)!r}")
            self.killed.add(node)   # reported once

    def shutdown(self) -> None:
        """SIGCONT then SIGKILL everything this cluster started (the lab reaps the rest)."""
        for proc in [*self.procs.values(), *self.clients.values()]:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, OSError):
                    os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.paused.clear()
        self.unmount()

    def unmount(self) -> None:
        """Unmount the tmpfs data dirs (lazily: a process may still be dying in one)."""
        for path in self.mounts:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
        self.mounts.clear()

    # -- node API (through the node's namespace) --------------------------------------------
    def call(self, node: str, method: str, path: str, body: Any = None,
             timeout: float = 1.0) -> Any:
        """JSON call to ``node``'s API; None when it does not answer in time."""
        try:
            with self.lab.entered(node):
                conn = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=timeout)
                conn.connect()
            try:
                conn.request(method, path, body=None if body is None else json.dumps(body),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = json.loads(resp.read())
                return data if resp.status == 200 else None
            finally:
                conn.close()
        except (OSError, http.client.HTTPException, ValueError):
            return None

    def status(self, node: str, timeout: float = 0.5) -> dict[str, Any] | None:
        if not self.alive(node) or node in self.paused:
            return None
        return self.call(node, "GET", "/status", timeout=timeout)

    def leaders(self, among: Iterable[str] | None = None) -> list[str]:
        return [n for n in (among if among is not None else self.ids)
                if (self.status(n) or {}).get("is_leader")]

    def leader(self, among: Iterable[str] | None = None) -> str | None:
        found = self.leaders(among)
        return found[0] if len(found) == 1 else None

    def wait_leader(self, timeout: float = 30.0, among: Iterable[str] | None = None,
                    exclude: str | None = None) -> str | None:
        nodes = [n for n in (among if among is not None else self.ids) if n != exclude]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader(nodes)
            if leader is not None:
                return leader
            time.sleep(0.05)
        return None

    def digests(self) -> dict[str, tuple[int, str] | None]:
        out: dict[str, tuple[int, str] | None] = {}
        for node in self.ids:
            d = self.call(node, "GET", "/digest", timeout=2.0) if self.alive(node) else None
            out[node] = (d["applied"], d["hash"]) if d else None
        return out

    def diagnose(self) -> dict[str, Any]:
        """Per node: /diagnostics (Raft internals), then every thread's stack into its log."""
        out: dict[str, Any] = {}
        for node in self.ids:
            out[node] = self.call(node, "GET", "/diagnostics", timeout=5.0) \
                if self.alive(node) else "not running"
            if self.alive(node):
                with contextlib.suppress(ProcessLookupError):
                    self.procs[node].send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        return out

    def log_tail(self, node: str, chars: int = 3000) -> str:
        path = self.workdir / f"node-{node}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- clients ----------------------------------------------------------------------------
    def start_clients(self, config: RunConfig, t0_ns: int) -> None:
        for i, node in enumerate(self.ids):
            consistency = "local" if node in config.local_read_nodes \
                else config.read_consistency
            with open(self.workdir / f"client-{node}.log", "ab") as out:
                self.clients[node] = self.lab.popen(
                    node, [sys.executable, str(CLIENT_MAIN), "--name", f"c{i}",
                           "--api-port", str(API_PORT), "--t0-ns", str(t0_ns),
                           "--duration", str(config.duration), "--seed", str(config.seed),
                           "--threads", str(config.client_threads()),
                           "--keys", str(config.keys), "--gen-seconds", str(config.gen_seconds),
                           "--op-timeout", str(config.op_timeout), "--mix", config.mix,
                           "--read-consistency", consistency,
                           "--txn-share", str(0.0 if node in config.local_read_nodes
                                              else config.txn_share),
                           "--out", str(self.history_path(node))],
                    stdout=out, stderr=subprocess.STDOUT)

    def history_path(self, node: str) -> Path:
        return self.workdir / f"history-{node}.json"

    def wait_clients(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node, proc in self.clients.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("client of %s overran; stopping it", node)
                proc.terminate()
                proc.wait(30)

    def merged_history(self) -> list[Operation]:
        """Every client's operations, renumbered so ids are unique across clients."""
        ops: list[Operation] = []
        for node in self.ids:
            path = self.history_path(node)
            if not path.exists():
                raise RuntimeError(f"client of {node} wrote no history:\n"
                                   + (self.workdir / f"client-{node}.log").read_text()[-2000:])
            for op in History.load(path).operations():
                ops.append(Operation(len(ops), op.process, op.key, op.f, op.value,
                                     op.invoke_ns, op.complete_ns, op.outcome))
        return ops


# --------------------------------------------------------------------------- the nemesis


@dataclass
class FaultRecord:
    """What the nemesis did: kind, targets, times (monotonic ns) and measured failover."""

    kind: str
    targets: list[str]
    start_ns: int
    end_ns: int = 0
    old_leader: str | None = None
    new_leader: str | None = None
    failover_s: float | None = None    # leader loss -> a new leader with a lease
    recovery_s: float | None = None    # heal -> a leader again (kills of a majority)
    note: str = ""


class Nemesis:
    """Executes a schedule against a :class:`ChaosCluster` in its own thread."""

    def __init__(self, cluster: ChaosCluster, schedule: Sequence[PlannedFault], t0_ns: int,
                 seed: int) -> None:
        self.cluster = cluster
        self.schedule = list(schedule)
        self.t0_ns = t0_ns
        self.seed = seed
        self.records: list[FaultRecord] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _sleep_until(self, offset_s: float) -> bool:
        delay = self.t0_ns / 1e9 + offset_s - time.monotonic()
        return not self._stop.wait(max(0.0, delay))

    def _run(self) -> None:
        try:
            for fault in self.schedule:
                if not self._sleep_until(fault.at):
                    return
                self._execute(fault)
        except BaseException as exc:  # reported by run_campaign
            log.exception("nemesis failed")
            self.error = exc
        finally:
            self.cluster.heal_all()

    def _execute(self, fault: PlannedFault) -> None:
        c = self.cluster
        rng = random.Random(f"{self.seed}-{fault.salt}")
        nodes = list(c.ids)
        n = len(nodes)
        minority = (n - 1) // 2
        old = c.leader()
        leader = old if old is not None else rng.choice(nodes)
        record = FaultRecord(fault.kind, [], time.monotonic_ns(), old_leader=old)
        if old is None:
            record.note = "no single leader when the fault started"
        kind = fault.kind
        survivors: list[str] = nodes        # side expected to elect a leader (failover)
        restart: list[str] = []
        resume: list[str] = []
        measure = True
        if kind == "isolate-one":
            target = fault.target or rng.choice(nodes)
            record.targets = [target]
            c.lab.isolate(target)
            survivors = [x for x in nodes if x != target]
        elif kind == "isolate-leader":
            record.targets = [leader]
            c.lab.isolate(leader)
            survivors = [x for x in nodes if x != leader]
        elif kind == "partition-random":
            minor = rng.sample(nodes, minority)
            record.targets = minor
            c.lab.partition(minor)
            survivors = [x for x in nodes if x not in minor]
        elif kind == "partition-leader-minority":
            minor = [leader] + rng.sample([x for x in nodes if x != leader], minority - 1)
            record.targets = minor
            c.lab.partition(minor)
            survivors = [x for x in nodes if x not in minor]
        elif kind == "bridge":
            order = rng.sample(nodes, n)
            half = (n - 1) // 2
            left, middle, right = order[:half], order[half], order[half + 1:]
            record.targets = [*left, f"|{middle}|", *right]
            measure = False
            c.lab.block([(a, b) for a in left for b in right]
                        + [(b, a) for a in left for b in right])
        elif kind == "one-way":
            mode = rng.choice(["leader-out", "leader-in", "pair"])
            others = [x for x in nodes if x != leader]
            if mode == "leader-out":
                pairs = [(leader, x) for x in others]
                survivors = others
            elif mode == "leader-in":
                pairs = [(x, leader) for x in others]
                survivors = others
            else:
                src, dst = rng.sample(nodes, 2)
                pairs = [(src, dst)]
                measure = False
            record.targets = [f"{a}->{b}" for a, b in pairs]
            record.note = mode
            c.lab.block(pairs)
        elif kind in ("kill-one", "kill-leader", "kill-majority", "kill-all"):
            if kind == "kill-one":
                victims = [fault.target or rng.choice(nodes)]
            elif kind == "kill-leader":
                victims = [leader]
            elif kind == "kill-majority":
                victims = rng.sample(nodes, n // 2 + 1)
            else:
                victims = nodes
            record.targets = victims
            for victim in victims:
                c.kill(victim)
            restart = victims
            survivors = [x for x in nodes if x not in victims]
        elif kind in ("pause-leader", "pause-one"):
            target = leader if kind == "pause-leader" else (fault.target or rng.choice(nodes))
            record.targets = [target]
            c.pause(target)
            resume = [target]
            survivors = [x for x in nodes if x != target]
        elif kind == "replace-one":
            # The "replace a dead region" runbook under load: remove a follower, kill it,
            # wipe its disk, start it again with --join and add it back.
            target = fault.target or rng.choice([x for x in nodes if x != leader])
            record.targets = [target]
            measure = False
            steps = [c.change_members("remove", target)]
            c.kill(target)
            c.wipe(target)
            c.start(target, join=True)
            steps.append(c.change_members("add", target))
            record.note = "; ".join(steps)
        elif kind == "isolate-leader-kill-new":
            # Isolate the leader; once the others elected a successor, kill -9 it too.
            record.targets = [leader]
            c.lab.isolate(leader)
            survivors = [x for x in nodes if x != leader]
        elif kind in DISK_KINDS:
            # ENOSPC on one node's data dir. hastate stops a node whose journal cannot be
            # written (fail-stop), so its exit is expected: it is restarted at the heal.
            target = leader if kind == "disk-full-leader" else rng.choice(nodes)
            record.targets = [target]
            filler = c.fill_disk(target)
            survivors = [x for x in nodes if x != target]
            measure = False
        elif kind == "flap":
            # Partitions changing every 0.2-0.8 s (some shorter than an election timeout).
            record.targets = ["flapping"]
            measure = False
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        log.info("fault %s on %s (leader was %s)", kind, record.targets, old)
        deadline = time.monotonic() + fault.hold
        # The leader is cut off from a majority that can elect another: time the failover.
        if measure and old is not None and old not in survivors and len(survivors) > n // 2:
            new = c.wait_leader(timeout=fault.hold, among=survivors)
            if new is not None:
                record.new_leader = new
                record.failover_s = round((time.monotonic_ns() - record.start_ns) / 1e9, 3)
            else:
                record.note = f"no leader among {survivors} within the hold"
        if kind == "isolate-leader-kill-new" and record.new_leader is not None:
            c.kill(record.new_leader)
            record.targets.append(f"+kill {record.new_leader}")
            restart = [record.new_leader]
            survivors = [x for x in survivors if x != record.new_leader]
        if kind == "flap":
            changes = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                cut = rng.sample(nodes, rng.randint(0, minority))
                if cut:
                    c.lab.partition(cut)
                else:
                    c.lab.heal()
                changes += 1
                self._stop.wait(min(rng.uniform(0.2, 0.8), max(0.0, deadline - time.monotonic())))
            record.note = f"{changes} partition changes"
        self._stop.wait(max(0.0, deadline - time.monotonic()))
        # Heal this fault (the next one starts from a healthy cluster).
        if kind in DISK_KINDS:
            target = record.targets[0]
            filler.unlink()
            proc = c.procs.get(target)
            if proc is not None and proc.poll() is not None:
                record.note = f"{target} stopped (exit {proc.returncode}) on ENOSPC"
                c.killed.add(target)    # expected: fail-stop
                c.procs.pop(target)
                restart = [target]
            else:
                record.note = f"{target} survived ENOSPC"
        c.lab.heal()
        for target in resume:
            c.resume(target)
        heal_ns = time.monotonic_ns()
        for victim in restart:
            c.start(victim)
        record.end_ns = heal_ns
        if len(survivors) <= n // 2:
            leader_back = c.wait_leader(timeout=30.0)
            if leader_back is not None:
                record.recovery_s = round((time.monotonic_ns() - heal_ns) / 1e9, 3)
        self.records.append(record)


# --------------------------------------------------------------------------- checks


def lease_intervals(paths: dict[str, Path]) -> dict[str, list[tuple[int, int]]]:
    """Per node, the intervals in which it could act as leader, from its lease trace.

    Each trace line says the lease was valid from ``from`` (start of the tick that extended
    it) until ``until``; consecutive lines of one term whose intervals touch or overlap are
    one continuous interval. Times are converted to integer ns.
    """
    out: dict[str, list[tuple[int, int]]] = {}
    for node, path in paths.items():
        spans: list[list[float]] = []
        last_term = None
        if path.exists():
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                rec = json.loads(line)
                start, until = float(rec["from"]), float(rec["until"])
                if spans and rec["term"] == last_term and start <= spans[-1][1]:
                    spans[-1][1] = max(spans[-1][1], until)
                else:
                    spans.append([start, until])
                last_term = rec["term"]
        out[node] = [(int(a * 1e9), int(b * 1e9)) for a, b in spans]
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def op_counts(ops: Sequence[Operation]) -> dict[str, Any]:
    by = Counter(f"{op.f.value}:{op.outcome.value}" for op in ops)
    return {"total": len(ops), "ok": sum(op.outcome is Outcome.OK for op in ops),
            "fail": sum(op.outcome is Outcome.FAIL for op in ops),
            "unknown": sum(op.outcome is Outcome.UNKNOWN for op in ops),
            "by_kind": dict(sorted(by.items()))}


@dataclass
class RunResult:
    """The JSON written for every run (``results/chaos/<run_id>.json``)."""

    run_id: str
    label: str
    seed: int
    nodes: int
    duration: float
    config: dict[str, Any]
    schedule: list[dict[str, Any]]
    faults: list[dict[str, Any]] = field(default_factory=list)
    faults_by_kind: dict[str, int] = field(default_factory=dict)
    ops: dict[str, Any] = field(default_factory=dict)
    keys: int = 0
    unknown_keys: list[str] = field(default_factory=list)
    violations: dict[str, list[str]] = field(default_factory=dict)
    linearizable: str = ""
    durability_ok: bool | None = None
    lease_ok: bool | None = None
    converged: bool | None = None
    watch_ok: bool | None = None
    watch_revisions: int = 0
    watch_declared_gaps: int = 0    # resumes answered by CompactedError (dump replaced history)
    events_ok: bool | None = None   # the event workload's checks (RunConfig.events)
    event_counts: dict[str, Any] = field(default_factory=dict)
    checker_s: dict[str, float] = field(default_factory=dict)
    failover_s: list[float] = field(default_factory=list)
    recovery_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    error: str | None = None
    artifacts: str | None = None
    code: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)   # when a node diverged

    @property
    def violation_count(self) -> int:
        return sum(len(v) for v in self.violations.values())

    @property
    def ok(self) -> bool:
        return self.error is None and self.violation_count == 0


def _check(result: RunResult, ops: list[Operation], final_state: dict[str, Any],
           digests: dict[str, tuple[int, str] | None], traces: dict[str, Path],
           key_budget: float, streams: dict[str, list[dict[str, Any]]] | None = None,
           final_revision: int | None = None) -> None:
    started = time.monotonic()
    lin = check_history(ops, budget_s=key_budget)
    result.checker_s["linearizability"] = round(time.monotonic() - started, 3)
    result.linearizable = lin.verdict.value
    result.keys = len(lin.keys)
    result.unknown_keys = [k for k, r in lin.keys.items() if r.verdict is Verdict.UNKNOWN]
    result.violations["linearizability"] = [
        f"{k}: {r.explanation}" for k, r in lin.keys.items() if r.verdict is Verdict.INVALID]

    started = time.monotonic()
    dur = check_durability(ops, final_state)
    result.checker_s["durability"] = round(time.monotonic() - started, 3)
    result.durability_ok = dur.ok
    result.violations["durability"] = [] if dur.ok else dur.summary().splitlines()

    started = time.monotonic()
    lease = check_lease_overlap(lease_intervals(traces))
    result.checker_s["lease"] = round(time.monotonic() - started, 3)
    result.lease_ok = lease.ok
    result.violations["lease"] = [] if lease.ok else lease.summary().splitlines()

    missing = [n for n, d in digests.items() if d is None]
    conv = check_convergence({n: d for n, d in digests.items() if d is not None})
    result.converged = conv.ok and not missing
    result.violations["convergence"] = (
        ([] if conv.ok else [conv.summary()])
        + [f"{n}: no digest (dead or not answering)" for n in missing])

    if streams is not None:
        started = time.monotonic()
        watch = check_watch_streams(streams, final_revision)
        result.checker_s["watch"] = round(time.monotonic() - started, 3)
        result.watch_ok = watch.ok
        result.watch_revisions = watch.revisions
        result.watch_declared_gaps = watch.declared_gaps
        result.violations["watch"] = [str(v) for v in watch.violations[:50]]


def _settle(cluster: ChaosCluster, timeout: float) -> tuple[dict[str, Any],
                                                            dict[str, tuple[int, str] | None]]:
    """Wait for a leader, read the final state through it, then wait for equal digests."""
    deadline = time.monotonic() + timeout
    final_state: dict[str, Any] | None = None
    while final_state is None and time.monotonic() < deadline:
        leader = cluster.wait_leader(timeout=max(0.1, deadline - time.monotonic()))
        if leader is None:
            break
        reply = cluster.call(leader, "GET", "/state?consistency=linearizable", timeout=10.0)
        if reply and reply.get("result") == "ok":
            final_state = reply["state"]
        else:
            time.sleep(0.2)
    if final_state is None:
        raise RuntimeError(f"no linearizable final state within {timeout}s")
    digests = cluster.digests()
    while time.monotonic() < deadline:
        values = set(digests.values())
        if None not in values and len(values) == 1:
            break
        time.sleep(0.3)
        digests = cluster.digests()
    return final_state, digests


def run_campaign(config: RunConfig, results_dir: Path = RESULTS_DIR,
                 keep: str = "on-failure") -> RunResult:
    """One run: cluster in namespaces, workload, nemesis, heal, settle, checks, result JSON.

    Cleans up namespaces, processes and its temp dir whatever happens. ``keep``:
    "on-failure" (copy histories, traces and logs to ``results_dir/<run_id>/`` when a check
    fails or the run errors), "always" or "never".
    """
    started = time.monotonic()
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{config.label}-n{config.nodes}-s{config.seed}"
    schedule = plan_schedule(config)
    result = RunResult(run_id=run_id, label=config.label, seed=config.seed, nodes=config.nodes,
                       duration=config.duration, config=_jsonable(asdict(config)),
                       schedule=[asdict(f) for f in schedule], code=code_under_test())
    print(f"[chaos] run {run_id}: seed={config.seed} nodes={config.nodes} "
          f"duration={config.duration}s compaction={config.resolved_compaction()} schedule="
          + ", ".join(f"{f.kind}@{f.at}s/{f.hold}s" for f in schedule), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"hastate-chaos-s{config.seed}-"))
    ops: list[Operation] = []
    try:
        with NetnsLab(config.nodes) as lab:
            cluster = ChaosCluster(lab, workdir, compaction=config.resolved_compaction(),
                                   write_timeout=config.write_timeout,
                                   tmpfs_mb=config.resolved_tmpfs(), lease=config.lease)
            try:
                cluster.mount()
                event_campaign.prepare(cluster, config)
                cluster.start_all()
                if cluster.wait_leader(timeout=30.0) is None:
                    raise RuntimeError("no initial leader within 30 s:\n"
                                       + "\n".join(cluster.log_tail(n) for n in cluster.ids))
                t0_ns = time.monotonic_ns()
                cluster.start_clients(config, t0_ns)
                event_campaign.start_clients(cluster, config, t0_ns, API_PORT)
                nemesis = Nemesis(cluster, schedule, t0_ns, config.seed)
                nemesis.start()
                try:
                    time.sleep(max(0.0, t0_ns / 1e9 + config.duration - config.tail
                                   - time.monotonic()))
                finally:
                    nemesis.stop()
                    cluster.heal_all()
                if nemesis.error is not None:
                    raise RuntimeError(f"nemesis failed: {nemesis.error!r}")
                cluster.wait_clients(timeout=config.tail + config.op_timeout + 30)
                final_state, digests = _settle(cluster, config.settle_timeout)
                for node in cluster.ids:
                    cluster.note_crash(node)
                if len(set(digests.values())) != 1 or None in digests.values():
                    result.diagnostics = cluster.diagnose()
                ops = cluster.merged_history()
                result.faults = [asdict(r) for r in nemesis.records]
                result.faults_by_kind = dict(Counter(r.kind for r in nemesis.records))
                result.failover_s = [r.failover_s for r in nemesis.records
                                     if r.failover_s is not None]
                result.recovery_s = [r.recovery_s for r in nemesis.records
                                     if r.recovery_s is not None]
                result.ops = op_counts(ops)
                final_revision = cluster.revision()
                streams = cluster.watch_streams(final_revision)
                _check(result, ops, with_pair_registers(final_state), digests,
                       {n: cluster.trace_path(n) for n in cluster.ids}, config.key_budget,
                       streams, final_revision)
                event_campaign.check(cluster, config, result)
                result.violations["crash"] = list(cluster.crashes)
                lease_workload.check_run(result, config.lease, workdir, cluster.ids,
                                         lease_intervals({n: cluster.trace_path(n)
                                                          for n in cluster.ids}), final_state,
                                         config.write_timeout)
            finally:
                cluster.shutdown()
    except Exception as exc:
        log.exception("run %s failed", run_id)
        result.error = f"{type(exc).__name__}: {exc}"[:4000]
    finally:
        result.wall_s = round(time.monotonic() - started, 1)
        results_dir.mkdir(parents=True, exist_ok=True)
        if keep == "always" or (keep == "on-failure" and not result.ok):
            target = results_dir / run_id
            shutil.copytree(workdir, target, ignore=shutil.ignore_patterns("data"),
                            dirs_exist_ok=True)
            if ops:
                History.from_operations(ops).save(target / "history.json")
            result.artifacts = str(target)
        shutil.rmtree(workdir, ignore_errors=True)
        (results_dir / f"{run_id}.json").write_text(json.dumps(asdict(result), indent=1,
                                                               default=str))
    print(f"[chaos] run {run_id}: {summary_line(result)}", flush=True)
    return result


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def summary_line(r: RunResult) -> str:
    if r.error:
        return f"ERROR {r.error.splitlines()[0]}"
    return (f"ops={r.ops.get('total')} (ok {r.ops.get('ok')}, unknown {r.ops.get('unknown')}) "
            f"keys={r.keys} unknown_keys={len(r.unknown_keys)} linearizable={r.linearizable} "
            f"durable={r.durability_ok} leases={r.lease_ok} converged={r.converged} "
            f"watch={r.watch_ok} ({r.watch_revisions} revisions, {r.watch_declared_gaps} "
            f"declared gaps) events={r.events_ok} {r.event_counts.get('events', '')} "
            f"violations={r.violation_count} faults={r.faults_by_kind} "
            f"failover={r.failover_s} check={r.checker_s} wall={r.wall_s}s")


# --------------------------------------------------------------------------- targeted scenario


@dataclass
class RejoinResult:
    """Outcome of :func:`run_rejoin_scenario`."""

    seed: int
    old_leader: str | None = None
    first_successor: str | None = None
    second_successor: str | None = None
    converged: bool = False
    caught_up_s: float | None = None     # heal -> old leader's digest equals the others'
    digests: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    artifacts: str | None = None
    trace: list[Any] = field(default_factory=list)   # statuses around the heal


def run_rejoin_scenario(seed: int, *, catch_up_timeout: float = 20.0,
                        results_dir: Path = RESULTS_DIR) -> RejoinResult:
    """An old leader with an uncommitted tail rejoins a leader elected *after* the split.

    The shape of the convergence failure of campaign seed 20261140 (3 nodes), made
    deterministic: (1) isolate the leader L while its client keeps proposing, so L appends
    entries no one else has; (2) the others elect N and commit a few thousand entries; (3)
    leadership moves from N to F (a leader change after the split: F starts with
    ``nextIndex = F.last + 1`` for L); (4) heal. L must catch up with F. Clients stop 3 s
    after the heal, then L's (applied index, state hash) must equal the others' within
    ``catch_up_timeout``.
    """
    out = RejoinResult(seed)
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix=f"hastate-chaos-rejoin-s{seed}-"))
    config = RunConfig(seed=seed, nodes=3, duration=60.0, mix="0.2,0.7,0.1", compaction=5000,
                       label="rejoin")
    keep = False
    try:
        with NetnsLab(3) as lab:
            c = ChaosCluster(lab, workdir, compaction=5000)
            try:
                c.start_all()
                old = c.wait_leader(30)
                if old is None:
                    raise RuntimeError("no initial leader")
                out.old_leader = old
                c.start_clients(config, time.monotonic_ns())
                time.sleep(1.0 + rng.random())
                c.lab.isolate(old)
                # Proposals the cut-off leader appends (it is still Raft leader for up to
                # leaderFallbackTimeout): its uncommitted tail, which the others never see.
                for i in range(24):
                    threading.Thread(target=c.call, daemon=True,
                                     args=(old, "POST", "/write",
                                           {"key": f"tail{i}", "value": f"tail-{i}"}, 8.0)).start()
                others = [n for n in c.ids if n != old]
                first = c.wait_leader(10, among=others)
                if first is None:
                    raise RuntimeError("no successor elected")
                out.first_successor = first
                time.sleep(2.5)
                second = next(n for n in others if n != first)
                reply = c.call(first, "POST", "/transfer", {"to": second}, timeout=15)
                if not reply or reply.get("result") != "ok":
                    raise RuntimeError(f"transfer {first} -> {second} failed: {reply}")
                out.second_successor = c.wait_leader(10, among=others)
                time.sleep(0.5)
                leader_now = out.second_successor or second
                out.trace.append(("before-heal", c.call(old, "GET", "/diagnostics", timeout=2),
                                  c.call(leader_now, "GET", "/diagnostics", timeout=2)))
                c.lab.heal()
                healed = time.monotonic()
                while time.monotonic() < healed + 3.0:
                    time.sleep(0.1)
                    out.trace.append((round(time.monotonic() - healed, 2),
                                      c.call(old, "GET", "/status", timeout=1),
                                      (c.call(leader_now, "GET", "/diagnostics", timeout=1)
                                       or {}).get("next_index")))
                for proc in c.clients.values():
                    proc.terminate()
                c.wait_clients(30)
                deadline = time.monotonic() + catch_up_timeout
                while time.monotonic() < deadline:
                    digests = c.digests()
                    if None not in digests.values() and len(set(digests.values())) == 1:
                        out.converged = True
                        out.caught_up_s = round(time.monotonic() - healed, 2)
                        break
                    time.sleep(0.2)
                out.digests = {n: d for n, d in c.digests().items()}
                if not out.converged:
                    keep = True
                    out.diagnostics = c.diagnose()
            finally:
                c.shutdown()
    except Exception as exc:
        keep = True
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        if keep:
            target = results_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-rejoin-s{seed}"
            shutil.copytree(workdir, target, ignore=shutil.ignore_patterns("data"),
                            dirs_exist_ok=True)
            out.artifacts = str(target)
            (target / "result.json").write_text(json.dumps(asdict(out), indent=1,
                                                           default=str))
        shutil.rmtree(workdir, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- negative controls


def run_local_read_control(seed: int, duration: float = 14.0,
                           results_dir: Path = RESULTS_DIR) -> RunResult:
    """Negative control 1: stale ``local`` reads on an isolated node must be flagged.

    3 nodes, every client 70% reads / 30% writes; the client of ``n2`` reads with
    ``consistency="local"`` while ``n2`` is isolated twice for 3.5 s (the others keep
    writing the same keys).
    """
    config = RunConfig(seed=seed, nodes=3, duration=duration, tail=3.0,
                       local_read_nodes=("n2",), label="control-local-read",
                       mix="0.7,0.3,0.0",
                       fixed_faults=(("isolate-one", 1.5, 3.5, "n2"),
                                     ("isolate-one", 7.0, 3.5, "n2")))
    return run_campaign(config, results_dir, keep="never")


@dataclass
class RawControlResult:
    """Negative control 2: raw PySyncObj, kill -9 of every node, per cycle."""

    cycles: int = 0
    cycles_with_loss: int = 0        # ground truth: acked keys missing from the final data
    cycles_flagged: int = 0          # check_durability said "lost"
    acked: int = 0                   # writes acknowledged, over all cycles
    lost: int = 0                    # of those, missing after a restart (each counted once)
    agreement: bool = True           # checker verdict == ground truth in every cycle
    wall_s: float = 0.0
    error: str | None = None

    @property
    def detection_rate(self) -> float | None:
        """Fraction of the cycles that lost writes which the checker flagged."""
        return self.cycles_flagged / self.cycles_with_loss if self.cycles_with_loss else None


def run_raw_kill_all_control(cycles: int, *, stop_at_first_loss: bool = False,
                             acks_per_cycle: int = 300) -> RawControlResult:
    """Raw PySyncObj under kill -9 of all nodes; each cycle checked with check_durability.

    Reuses ``tests/consensus/harness.py`` (``node_main.py --engine raw``: PySyncObj's
    FileJournal and forked dumps, compaction every 50 entries, 1 kB values) on loopback.
    The writers acknowledge each key (written once, value = key padded to 1 kB) to an
    ack file; every acknowledged key becomes an ``ok`` write in the history given to the
    checker, and the final state is the restarted leader's data. The checker's verdict is
    compared with the plain ground truth (acknowledged keys absent from the data).
    """
    sys.path.insert(0, str(REPO / "tests"))
    from consensus.harness import ProcCluster  # noqa: E402  (tests/consensus is no package)

    out = RawControlResult()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="hastate-chaos-raw-"))
    c = ProcCluster(workdir, "raw", compaction=50)
    try:
        c.start_all()
        acknowledged: list[str] = []
        for cycle in range(cycles):
            leader = c.wait_leader(30)
            ack_file = c.start_load(leader, count=10 ** 6, prefix=f"c{cycle}", threads=32,
                                    value_size=1000)
            c.wait_for(f"{acks_per_cycle} acks",
                       lambda: len(c.acked(ack_file)) >= acks_per_cycle, 60)
            c.kill_all()
            acked_now = c.acked(ack_file)
            acknowledged += acked_now
            c.wait_orphans()
            c.start_all()
            leader = c.wait_leader(30)
            c.wait_for("the restarted leader to apply its log", lambda: _raw_settled(c, leader),
                       30)
            data = c.get(leader, "/data", timeout=30) or {}
            now = time.monotonic_ns()
            ops = [Operation(i, "raw-writer", key, F.WRITE, key.ljust(1000, "."), now, now,
                             Outcome.OK) for i, key in enumerate(acknowledged)]
            durable = check_durability(ops, data)
            truth = any(key not in data for key in acknowledged)
            out.cycles += 1
            out.acked += len(acked_now)
            out.lost += sum(key not in data for key in acknowledged)
            out.cycles_with_loss += truth
            out.cycles_flagged += (not durable.ok)
            out.agreement &= (not durable.ok) == truth
            # Later cycles judge only their own writes: forget what was already lost.
            acknowledged = [key for key in acknowledged if key in data]
            if truth and stop_at_first_loss:
                break
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        c.close()
        shutil.rmtree(workdir, ignore_errors=True)
        out.wall_s = round(time.monotonic() - started, 1)
    return out


def _raw_settled(c: Any, node: str) -> bool:
    st = c.status(node)
    return bool(st and st["is_leader"] and
                st["applied"] == st["commit_index"] == st["last_log_index"])


# --------------------------------------------------------------------------- reporting

#: What the tests of this pytest session ran: RunResults and control summary lines, printed
#: by tests/chaos/conftest.py at the end of the session.
SESSION: dict[str, list[Any]] = {"runs": [], "controls": []}


def chaos_option(config: Any, name: str, default: Any) -> Any:
    """A pytest campaign option (tests/chaos/conftest.py), or ``default`` when it is not
    registered (tests/chaos was not on the command line) or not given."""
    try:
        value = config.getoption(name)
    except ValueError:
        return default
    return default if value is None else value


def aggregate(results: Sequence[RunResult]) -> dict[str, Any]:
    """Totals over runs, for the summary table and docs/reliability.md."""
    faults: Counter[str] = Counter()
    for r in results:
        faults.update(r.faults_by_kind)
    failovers = [f for r in results for f in r.failover_s]
    recoveries = [f for r in results for f in r.recovery_s]
    return {
        "runs": len(results),
        "errors": sum(r.error is not None for r in results),
        "nodes": dict(Counter(r.nodes for r in results)),
        "faults": sum(faults.values()),
        "faults_by_kind": dict(sorted(faults.items())),
        "ops": sum(r.ops.get("total", 0) for r in results),
        "ops_ok": sum(r.ops.get("ok", 0) for r in results),
        "ops_unknown": sum(r.ops.get("unknown", 0) for r in results),
        "keys": sum(r.keys for r in results),
        "unknown_keys": sum(len(r.unknown_keys) for r in results),
        "violations": {kind: sum(len(r.violations.get(kind, [])) for r in results)
                       for kind in sorted({kind for r in results for kind in r.violations})},
        "failover_n": len(failovers),
        "failover_p50_s": percentile(failovers, 50),
        "failover_p99_s": percentile(failovers, 99),
        "failover_max_s": max(failovers) if failovers else None,
        "recovery_p50_s": percentile(recoveries, 50),
        "checker_s_max": max((sum(r.checker_s.values()) for r in results), default=0.0),
        "wall_s": round(sum(r.wall_s for r in results), 1),
    }


def format_table(results: Sequence[RunResult]) -> str:
    """One line per run plus a total line."""
    head = (f"{'run':<34} {'seed':>10} {'n':>2} {'faults':>6} {'ops':>6} {'unk.ops':>7} "
            f"{'keys':>5} {'unk.keys':>8} {'viol.':>5} {'lin':>8} {'failover p50/max':>16} "
            f"{'check s':>7} {'wall s':>6}")
    lines = [head, "-" * len(head)]
    for r in results:
        fo = r.failover_s
        fo_s = f"{percentile(fo, 50):.2f}/{max(fo):.2f}" if fo else "-"
        lines.append(
            f"{r.run_id[-34:]:<34} {r.seed:>10} {r.nodes:>2} {sum(r.faults_by_kind.values()):>6} "
            f"{r.ops.get('total', 0):>6} {r.ops.get('unknown', 0):>7} {r.keys:>5} "
            f"{len(r.unknown_keys):>8} {r.violation_count if not r.error else 'ERR':>5} "
            f"{r.linearizable or '-':>8} {fo_s:>16} {sum(r.checker_s.values()):>7.1f} "
            f"{r.wall_s:>6.0f}")
    agg = aggregate(results)
    p50, p99 = agg["failover_p50_s"], agg["failover_p99_s"]
    lines.append("-" * len(head))
    lines.append(f"total: {agg['runs']} runs ({agg['errors']} errors), {agg['faults']} faults "
                 f"{agg['faults_by_kind']}, {agg['ops']} ops ({agg['ops_unknown']} unknown), "
                 f"{agg['keys']} keys ({agg['unknown_keys']} unknown), violations "
                 f"{agg['violations']}, failover p50 {p50} s / p99 {p99} s "
                 f"(n={agg['failover_n']})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.chaos.campaign --seed S --runs N --duration D [--nodes 3,5]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--nodes", default="3")
    parser.add_argument("--kinds", default=None, help="comma-separated fault kinds")
    parser.add_argument("--keep", default="on-failure", choices=("on-failure", "always", "never"))
    parser.add_argument("--mix", default="0.4,0.4,0.2", help="read,write,cas weights")
    parser.add_argument("--keys", type=int, default=6, help="keys per 8 s generation")
    parser.add_argument("--no-disk", action="store_true", help="no tmpfs, no disk-full faults")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    base = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    sizes = [int(x) for x in args.nodes.split(",")]
    results = []
    for i in range(args.runs):
        nodes = sizes[i % len(sizes)]
        kinds = tuple(args.kinds.split(",")) if args.kinds else None
        results.append(run_campaign(RunConfig(seed=base + i, nodes=nodes,
                                              duration=args.duration, kinds=kinds,
                                              mix=args.mix, keys=args.keys,
                                              tmpfs_mb=None if args.no_disk else 64),
                                    keep=args.keep))
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
