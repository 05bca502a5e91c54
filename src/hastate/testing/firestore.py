"""A real Firestore emulator on a free loopback port, for tests and benchmarks.

The emulator is google-cloud-cli's ``cloud-firestore-emulator`` (Java). It runs in a session
of its own, its output goes to a log file, readiness is its "Dev App Server is now running"
line, and :meth:`FirestoreEmulator.stop` kills the whole process group (the launcher script
starts a JVM). It keeps data in memory only: a restart loses everything, unless the data was
exported just before (``keep_data=True``: the emulator's export endpoint writes the
project's documents, and the next start imports them). Writes that land between the export
and the kill are lost: that is the emulator, not Firestore.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.request
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

from hastate.testing.cluster import free_port
from hastate.testing.engine_files import write_engine_file

#: Where google-cloud-cli puts the emulator (Debian package google-cloud-cli-firestore-emulator).
EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/"
                "cloud_firestore_emulator")
INSTALL = ("apt-get install google-cloud-cli-firestore-emulator openjdk-17-jre-headless "
           "(Google Cloud's apt repository), and pip install 'hastate[firestore]'")
READY = "Dev App Server is now running"


def missing() -> str | None:
    """Why the emulator cannot run here (None when it can): name the install command."""
    binary = Path(os.environ.get("HASTATE_FIRESTORE_EMULATOR", EMULATOR))
    if not binary.exists():
        return f"the Firestore emulator is not installed ({binary} missing): {INSTALL}"
    if shutil.which("java") is None:
        return f"java is missing (the Firestore emulator is a JVM program): {INSTALL}"
    try:
        import google.cloud.firestore  # noqa: F401
    except ImportError:
        return f"google-cloud-firestore is missing: {INSTALL}"
    return None


class FirestoreEmulator:
    """One emulator process on 127.0.0.1; ``host`` is FIRESTORE_EMULATOR_HOST for clients."""

    def __init__(self, workdir: str | os.PathLike[str], port: int | None = None, *,
                 project: str = "hastate-test") -> None:
        self.project = project
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.export_dir = self.workdir / "emulator-export"
        self.log = self.workdir / "firestore-emulator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> "FirestoreEmulator":
        """Start it (importing the last export, if any) and wait until it serves."""
        reason = missing()
        if reason is not None:
            raise RuntimeError(reason)
        argv = [str(Path(os.environ.get("HASTATE_FIRESTORE_EMULATOR", EMULATOR))), "start",
                "--host=127.0.0.1", f"--port={self.port}"]
        metadata = sorted(self.export_dir.glob("*/*.overall_export_metadata"))
        if metadata:
            argv.append(f"--import-data={metadata[-1]}")
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.log.read_bytes()[offset:].decode(errors="replace"):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = self.log.read_bytes()[offset:][-3000:].decode(errors="replace")
        self.stop()
        raise RuntimeError(f"the Firestore emulator did not start on {self.host}; log:\n{tail}")

    def export(self) -> None:
        """Write the project's documents to ``export_dir`` (the next start imports them)."""
        shutil.rmtree(self.export_dir, ignore_errors=True)
        self.export_dir.mkdir(parents=True)
        body = json.dumps({"database": f"projects/{self.project}/databases/(default)",
                           "export_directory": str(self.export_dir)}).encode()
        request = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{self.project}:export", data=body,
            method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()

    def stop(self, *, keep_data: bool = False) -> None:
        """Kill its process group; with ``keep_data`` export first (the next start has it)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if keep_data:
            self.export()
        else:
            shutil.rmtree(self.export_dir, ignore_errors=True)
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # the launcher and its JVM
        except ProcessLookupError:
            pass
        proc.wait(10)

    def restart(self, *, keep_data: bool) -> None:
        """Stop and start on the same port (clients reconnect to the same address)."""
        self.stop(keep_data=keep_data)
        self.start()

    def __enter__(self) -> "FirestoreEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(workdir: str | os.PathLike[str]) -> Iterator[FirestoreEmulator]:
    """A started emulator under ``workdir`` with FIRESTORE_EMULATOR_HOST pointing at it (for
    this process and the bots it starts); skips the calling test, naming what to install,
    when the emulator is missing. Stopped, and the variable restored, on exit."""
    reason = missing()
    if reason is not None:
        import pytest
        what, _, command = reason.rpartition(": ")
        pytest.skip(f"missing tool: {what}; enable with: {command}")
    emulator = FirestoreEmulator(Path(workdir) / "emulator").start()
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator
    finally:
        emulator.stop()
        if saved is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = saved


def cluster_file(path: Path, *, name: str, ids: list[str], project: str = "hastate-test",
                 lease_ttl: str = "2s") -> Path:
    """Write a Firestore-backed cluster file for instances ``ids``."""
    return write_engine_file(path, name=name, engine="firestore", ids=ids,
                             settings={"project": project, "lease_ttl": lease_ttl})
