"""A real three-member etcd cluster on loopback, for tests and benchmarks.

The members are child processes of Debian's ``etcd-server`` (``/usr/bin/etcd``) on free
127.0.0.1 ports with data directories under a work directory the caller owns; nothing else is
listened on or contacted. Each member can be stopped, killed, paused and restarted on its own
(fault tests). :func:`require_etcd` skips a test loudly, naming the install command, when the
binary is missing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import http.client
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from hastate.testing.cluster import free_port
from hastate.testing.engine_files import write_engine_file
from hastate.testing.stdio import kill_and_reap

ETCD = "etcd"
ETCD_PATH = "/usr/bin/etcd"
INSTALL_HINT = "apt-get install etcd-server"


def etcd_binary() -> str | None:
    """Path of the etcd binary, or None when it is not installed."""
    return shutil.which(ETCD) or (ETCD_PATH if os.path.exists(ETCD_PATH) else None)


def require_etcd() -> str:
    """The etcd binary; skips the calling test (naming the install command) without it."""
    found = etcd_binary()
    if found is None:
        import pytest
        pytest.skip(f"missing tool: etcd (Debian's etcd-server package); "
                    f"enable with: {INSTALL_HINT}")
    return found


def etcd_version() -> str:
    """``etcd --version``'s version string ("unknown" when it cannot be run)."""
    try:
        out = subprocess.run([etcd_binary() or ETCD, "--version"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def write_tls(directory: str | os.PathLike[str]) -> TlsFiles:
    """A fresh CA with a 127.0.0.1 server certificate and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("hastate test etcd CA"))
          .issuer_name(name("hastate test etcd CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + _dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(common: str, usages: list[Any]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(common)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(out / "ca.pem", out / "server.pem", out / "server-key.pem",
                     out / "client.pem", out / "client-key.pem")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    # etcd's JSON gateway dials etcd's gRPC side with the server certificate: client auth too.
    server = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    for (cert_path, key_path), usages, common in (
            ((files.server_cert, files.server_key), server, "etcd"),
            ((files.client_cert, files.client_key), [ExtendedKeyUsageOID.CLIENT_AUTH], "bot")):
        cert, key = leaf(common, usages)
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        key_path.chmod(0o600)
    return files


class EtcdCluster:
    """Three etcd members as child processes under ``workdir`` (see the module docstring).

    ``on_spawn`` sees every member process started (benchmarks register them for cleanup).
    With ``tls`` the client URLs are https and clients must present a certificate of its CA.
    """

    def __init__(self, workdir: str | os.PathLike[str], *, size: int = 3,
                 on_spawn: Callable[[subprocess.Popen[bytes]], Any] | None = None,
                 extra_args: tuple[str, ...] = (), tls: TlsFiles | None = None) -> None:
        self.workdir = Path(workdir)
        self.names = [f"e{i}" for i in range(size)]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_ports = [free_port() for _ in self.names]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.token = f"hastate-{os.getpid()}-{int(time.time() * 1000)}"
        self.on_spawn = on_spawn
        self.extra_args = extra_args
        self.tls = tls
        self._started: set[int] = set()

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of every member (``http(s)://127.0.0.1:port``)."""
        scheme = "https" if self.tls else "http"
        return [f"{scheme}://127.0.0.1:{p}" for p in self.client_ports]

    def argv(self, i: int) -> list[str]:
        """The command line of member ``i``."""
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports))
        client, peer = self.endpoints[i], f"http://127.0.0.1:{self.peer_ports[i]}"
        state = "existing" if i in self._started else "new"
        return [etcd_binary() or ETCD, "--name", self.names[i],
                "--data-dir", str(self.workdir / self.names[i]),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-token", self.token,
                "--initial-cluster-state", state, "--logger", "zap", "--log-level", "warn",
                "--log-outputs", "stderr", *self._tls_args(), *self.extra_args]

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca), "--client-cert-auth"]

    def _connection(self, i: int, timeout: float) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection("127.0.0.1", self.client_ports[i], timeout=timeout)
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return http.client.HTTPSConnection("127.0.0.1", self.client_ports[i], timeout=timeout,
                                           context=context)

    def start_member(self, i: int) -> None:
        """Start (or restart, keeping its data) member ``i``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"{self.names[i]}.log", "ab") as logf:
            proc = subprocess.Popen(self.argv(i), stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._started.add(i)
        self.procs[i] = proc
        if self.on_spawn is not None:
            self.on_spawn(proc)

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        """Start every member and wait until each is healthy."""
        for i in range(len(self.names)):
            self.start_member(i)
        for i in range(len(self.names)):
            self.wait_healthy(i, timeout)
        return self

    def wait_healthy(self, i: int, timeout: float = 30.0) -> None:
        """Wait until member ``i`` answers ``/health`` with true; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.healthy(i):
                    return
            except (OSError, http.client.HTTPException, ValueError, ssl.SSLError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"etcd member {self.names[i]} not healthy within {timeout}s "
                           f"(log: {self.workdir / (self.names[i] + '.log')})")

    def kill_member(self, i: int) -> None:
        """SIGKILL member ``i`` and reap it."""
        proc = self.procs.get(i)
        if proc is not None:
            kill_and_reap(proc)

    def pause_member(self, i: int, paused: bool = True) -> None:
        """SIGSTOP (or SIGCONT) member ``i``."""
        os.kill(self.procs[i].pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        """Kill every member and reap it (a graceful stop waits seconds for leader
        transfers to members that are gone); keeps the data dirs."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            kill_and_reap(proc)
        self.procs.clear()

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- raw gateway calls (probes of the harness, not the engine's client) -------------------
    def call(self, i: int, path: str, body: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
        """POST ``body`` to member ``i``'s v3 JSON gateway; RuntimeError on a non-200."""
        conn = self._connection(i, timeout)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"etcd {path} -> HTTP {resp.status}: {data[:200]!r}")
            return json.loads(data)
        finally:
            conn.close()

    def healthy(self, i: int) -> bool:
        """Member ``i``'s ``/health`` says true."""
        conn = self._connection(i, 2)
        try:
            conn.request("GET", "/health")
            return json.loads(conn.getresponse().read()).get("health") == "true"
        finally:
            conn.close()

    def status(self, i: int, timeout: float = 3.0) -> dict[str, Any]:
        """Member ``i``'s ``/v3/maintenance/status``."""
        return self.call(i, "/v3/maintenance/status", {}, timeout=timeout)

    def leader_index(self) -> int | None:
        """Index of the member that leads etcd's Raft group now (None when unknown)."""
        for i, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            try:
                st = self.status(i)
            except (OSError, RuntimeError, http.client.HTTPException, ValueError):
                continue
            if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                return i
        return None

    def terms(self) -> dict[str, int]:
        """Raft term per running member."""
        out = {}
        for i, proc in self.procs.items():
            if proc.poll() is None:
                try:
                    out[self.names[i]] = int(self.status(i).get("raftTerm", 0))
                except (OSError, RuntimeError, http.client.HTTPException, ValueError):
                    pass
        return out


@contextlib.contextmanager
def running(workdir: str | os.PathLike[str]) -> Iterator[EtcdCluster]:
    """A started three-member cluster under ``workdir`` (skips the calling test, naming the
    install command, when etcd is missing); stopped on exit."""
    require_etcd()
    with EtcdCluster(Path(workdir) / "etcd") as cluster:
        yield cluster


def write_cluster_file(path: str | os.PathLike[str], endpoints: list[str], *,
                       name: str = "contract", ids: tuple[str, ...] = (
                           "instance-1", "instance-2", "instance-3"),
                       session_ttl: int = 2, request_timeout: float | None = None,
                       http: bool | dict[str, str] = False,
                       regions: dict[str, str] | None = None,
                       discover_members: bool = True) -> Path:
    """A cluster file for bots ``ids`` on the etcd ``endpoints`` (engine = "etcd")."""
    settings: dict[str, Any] = {"endpoints": list(endpoints), "session_ttl": session_ttl}
    if not discover_members:
        settings["discover_members"] = False
    if request_timeout is not None:
        settings["request_timeout"] = request_timeout
    return write_engine_file(Path(path), name=name, engine="etcd", settings=settings, ids=ids,
                             http=http, regions=regions)
