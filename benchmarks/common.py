"""Shared plumbing: process and temp-dir cleanup, free ports, /proc sampling, statistics."""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from hastate.testing.stdio import JsonLinesProcess, kill_and_reap

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg: str) -> None:
    """Progress line on stderr (the result table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- cleanup ------------------------------------------------------------------------------------
class Cleanup:
    """Every process, temp dir and teardown hook the benchmark starts; undone once, at exit.

    Systems also stop themselves in ``finally`` blocks; this is the net under them (atexit,
    SIGTERM, Ctrl-C). Processes are killed by their own pid only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[Any]] = []
        self._dirs: list[str] = []
        self._hooks: list[Callable[[], None]] = []

    def proc(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        with self._lock:
            self._procs.append(proc)
        return proc

    def tempdir(self, tag: str) -> Path:
        path = tempfile.mkdtemp(prefix=f"hastate-bench-{tag}-")
        with self._lock:
            self._dirs.append(path)
        return Path(path)

    def hook(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._hooks.append(fn)

    def remove_dir(self, path: Path | str) -> None:
        shutil.rmtree(path, ignore_errors=True)
        with self._lock:
            if str(path) in self._dirs:
                self._dirs.remove(str(path))

    def run(self) -> None:
        with self._lock:
            hooks, self._hooks = self._hooks[::-1], []
            procs, self._procs = self._procs, []
            dirs, self._dirs = self._dirs, []
        for fn in hooks:
            try:
                fn()
            except Exception as exc:  # keep tearing down
                log(f"cleanup hook failed: {exc!r}")
        for proc in procs:
            kill_and_reap(proc)
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)


CLEANUP = Cleanup()
atexit.register(CLEANUP.run)


def _on_term(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C, so ``finally`` blocks and atexit clean up."""
    signal.signal(signal.SIGTERM, _on_term)


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``pred`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # the thing may not be up yet
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}"
                       + (f" (last error: {last_exc!r})" if last_exc else ""))


# -- /proc sampling ----------------------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """User+system CPU seconds of ``pid`` (all threads); 0.0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in bytes (0 when unknown)."""
    out = {"rss": 0, "hwm": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss"] = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    out["hwm"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def machine_busy_cpu() -> float:
    """CPU seconds all processes on this machine spent busy (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


class CpuMeter:
    """CPU seconds spent by this process (driver + in-process member) and the given pids.

    ``foreign_cpu_s`` is what everything else on the machine used meanwhile (other people's
    test runs on a shared machine): large values mean the figures are disturbed.
    """

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self._t0 = time.monotonic()
        self._start = self._read()

    def _read(self) -> tuple[float, float, float]:
        return time.process_time(), sum(proc_cpu(p) for p in self.pids), machine_busy_cpu()

    def stop(self) -> dict[str, float]:
        driver, servers, busy = self._read()
        d, s = driver - self._start[0], servers - self._start[1]
        wall = time.monotonic() - self._t0
        foreign = max(0.0, busy - self._start[2] - d - s)
        return {"driver_cpu_s": d, "server_cpu_s": s, "foreign_cpu_s": foreign,
                "foreign_cores": foreign / wall if wall > 0 else 0.0}


# -- statistics --------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0-100) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of latencies given in seconds."""
    lat = sorted(latencies)
    if not lat:
        return {"n": 0}
    return {"n": len(lat), "p50_ms": percentile(lat, 50) * 1e3, "p90_ms": percentile(lat, 90) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3, "max_ms": lat[-1] * 1e3,
            "mean_ms": sum(lat) / len(lat) * 1e3}


def cdf_points(latencies: Sequence[float], points: int = 200) -> list[list[float]]:
    """[[latency_ms, fraction], ...] at ``points`` evenly spaced quantiles (for CDF plots)."""
    lat = sorted(latencies)
    if not lat:
        return []
    out = []
    for i in range(points + 1):
        q = 100.0 * i / points
        out.append([round(percentile(lat, q) * 1e3, 4), round(q / 100.0, 4)])
    return out


def git_state(repo: Path) -> dict[str, Any]:
    """Commit and working-tree state of ``repo`` (what exactly was measured)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    dirty = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    diff = git("diff", "HEAD", "--", "src")
    import hashlib
    return {"commit": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "src_dirty_files": dirty,
            "src_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None}


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, memory, Python, kernel, load average at start."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_bytes": mem,
            "python": sys.version.split()[0], "kernel": os.uname().release,
            "loadavg_at_start": os.getloadavg()}


def dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str))


# -- child processes ---------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parent.parent


class Child(JsonLinesProcess):
    """A :mod:`benchmarks.node` member process with a JSON-lines control channel on stdio."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH"))
                                            if p)
        super().__init__([sys.executable, "-m", "benchmarks.node", *argv], log_path, env=env,
                         cwd=str(REPO_ROOT))

    def start(self, ready_timeout: float = 30.0) -> dict[str, Any]:
        """Start the member (killed at exit by CLEANUP); its ready reply."""
        try:
            reply = super().start(ready_timeout)
        finally:
            if self.proc is not None:
                CLEANUP.proc(self.proc)
        if not reply.get("ready"):
            raise RuntimeError(f"member did not start: {reply}; log: {self.log()[-2000:]}")
        return reply

    def kill9(self) -> None:
        """SIGKILL now, without waiting (the failover trigger); reap it with :meth:`kill`."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
