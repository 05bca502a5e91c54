"""A child process driven by JSON lines: one request per stdin line, one answer per stdout line.

For nodes that are not ``hastate node run`` and have no HTTP port: a raw PySyncObj node on
the secure transport (transport tests) or a PySyncObj member of a benchmark. The child's
first line says it is up; stderr goes to a log file the caller names.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence


class JsonLinesProcess:
    """``argv`` as a child process with a JSON-lines control channel on its stdin and stdout."""

    def __init__(self, argv: Sequence[str], log_path: str | os.PathLike[str], *,
                 env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: "queue.Queue[bytes]" = queue.Queue()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready_timeout: float = 30.0) -> dict[str, Any]:
        """Start the child; return its first line (its hello), read within ``ready_timeout``."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, env=self.env,
                                         cwd=self.cwd, start_new_session=True)
        self._lines = queue.Queue()
        threading.Thread(target=_read_lines, args=(self.proc, self._lines), daemon=True,
                         name=f"child-{self.proc.pid}").start()
        return self._next(ready_timeout)

    def request(self, message: Mapping[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send one request and return the child's answer to it."""
        with self._lock:
            assert self.proc is not None and self.proc.stdin is not None, "start() first"
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
            return self._next(timeout)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"child pid {self.pid} did not answer within {timeout}s; "
                               f"{self.log_path}:\n{self.log()[-3000:]}") from None
        if not line:
            raise RuntimeError(f"child pid {self.pid} exited; {self.log_path}:\n"
                               f"{self.log()[-3000:]}")
        return json.loads(line)

    def kill(self) -> None:
        """SIGKILL the child (its pid only) if it runs; reap it and close its pipes."""
        if self.proc is not None:
            kill_and_reap(self.proc)

    def stop(self, timeout: float = 5.0) -> None:
        """Close stdin (the child exits), SIGKILL it after ``timeout``."""
        if self.proc is None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def log(self) -> str:
        """The child's stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def kill_and_reap(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGKILL ``proc`` (by its pid) if it still runs, reap it, and close its pipes."""
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def _read_lines(proc: subprocess.Popen[bytes], lines: "queue.Queue[bytes]") -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put(b"")
