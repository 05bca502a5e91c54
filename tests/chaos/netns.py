"""Network-namespace lab: N isolated hosts on one private bridge, with nftables partitions.

Layout (nothing is created in the root namespace, so the host's own network is untouched)::

    <prefix>_hub  : bridge br0, one veth port v<i> per node
    <prefix><node>: lo + eth0 (peer of v<i>) with address i+1 of the lab subnet,
                    nftables table ``inet hst`` dropping input from the set ``block_in``

Faults are silent drops on the *receiving* side (like a real partition: no RST, no
EPERM to the sender; TCP retransmits and recovers after :meth:`NetnsLab.heal`).
Partition helpers set the whole fault at once ("the network now looks like this"), in
the Jepsen nemesis style; :meth:`NetnsLab.block` is the primitive for arbitrary
directed combinations.

Every namespace name starts with ``hst-<pid>-<n>-`` so :func:`cleanup_stale` can remove
what crashed runs left behind without touching labs of processes still alive. A lab is a
context manager, and an ``atexit`` hook closes any lab the test forgot.

Requires root, ``ip`` (iproute2) and ``nft`` (nftables); :func:`require_netns` skips the
calling test otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import ipaddress
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from typing import Any, Iterable, Iterator, Sequence

log = logging.getLogger(__name__)

#: Prefix of every namespace this module creates.
PREFIX = "hst-"
#: Default lab subnet: private, and only ever used inside the lab's own namespaces.
DEFAULT_SUBNET = "10.77.0.0/24"

_CLONE_NEWNET = 0x40000000
_NODE_NAME = re.compile(r"^[a-z0-9]{1,8}$")
_NFT_TABLE = """\
table inet hst {
    set block_in { type ipv4_addr; }
    chain input { type filter hook input priority 0; policy accept; ip saddr @block_in drop; }
}
"""
_lab_ids = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip`` with ``args``; raise CalledProcessError (with stderr logged) on failure."""
    argv = ["ip", *args]
    log.debug("%s", " ".join(argv))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        log.error("%s failed: %s", " ".join(argv), result.stderr.strip())
        result.check_returncode()
    return result


def _list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process still inside ``ns`` (all started by a lab), then delete it."""
    for pid in _ip("netns", "pids", ns, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", ns, check=False)


def _pid_alive(pid: int) -> bool:
    """True if a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces named ``<prefix><pid>-...`` whose owning process is gone.

    Namespaces of live processes (including this one) are left alone, so concurrent test
    runs do not break each other. Returns the names deleted.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-")
    removed = []
    for ns in _list_namespaces():
        match = pattern.match(ns)
        if match and not _pid_alive(int(match.group(1))):
            log.warning("removing stale namespace %s", ns)
            _kill_namespace(ns)
            removed.append(ns)
    return removed


#: Skip reasons for a missing tool start with MISSING_TOOL and end with ENABLE + the command;
#: tests/conftest.py repeats them at the end of the run.
MISSING_TOOL = "missing tool"
ENABLE = "enable with:"
INSTALL = "sudo apt-get install -y nftables iproute2"


@functools.cache
def unavailable_reason() -> str | None:
    """Why network-namespace labs cannot run here, or None if they can (probed once)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return f"{MISSING_TOOL}: network namespaces need root; {ENABLE} sudo -E python -m pytest -q"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{MISSING_TOOL}: {tool!r} not found; {ENABLE} {INSTALL}"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        created = _ip("netns", "add", probe, check=False)
        if created.returncode != 0:
            return f"'ip netns add' failed: {created.stderr.strip()}"
        nft = subprocess.run(["ip", "netns", "exec", probe, "nft", "-f", "-"], input=_NFT_TABLE,
                             capture_output=True, text=True, timeout=30)
        if nft.returncode != 0:
            return f"nftables unusable inside a namespace: {nft.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def require_netns() -> None:
    """Skip the calling pytest test when :func:`unavailable_reason` gives a reason."""
    import pytest

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _setns(fd: int) -> None:
    """Move the calling *thread* into the network namespace open at ``fd``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetnsLab:
    """N hosts in their own network namespaces on one bridge, with partition helpers.

    ``nodes`` is a count (names ``n0``..``n<N-1>``) or explicit names (lowercase
    alphanumerics, at most 8 characters). Node ``i`` gets host address ``i+1`` of
    ``subnet``. Use as a context manager; :meth:`close` is idempotent and also runs at
    interpreter exit.
    """

    def __init__(self, nodes: int | Sequence[str], *, subnet: str = DEFAULT_SUBNET) -> None:
        names = [f"n{i}" for i in range(nodes)] if isinstance(nodes, int) else list(nodes)
        bad = [n for n in names if not _NODE_NAME.match(n)]
        if bad or len(set(names)) != len(names) or not names:
            raise ValueError(f"node names must be unique, non-empty [a-z0-9]{{1,8}}: {names!r}")
        network = ipaddress.ip_network(subnet)
        if not isinstance(network, ipaddress.IPv4Network) or not network.is_private:
            raise ValueError(f"lab subnet must be a private IPv4 network, got {subnet}")
        hosts = list(itertools.islice(network.hosts(), len(names)))
        if len(hosts) != len(names):
            raise ValueError(f"subnet {subnet} is too small for {len(names)} nodes")
        self._addresses = {name: str(addr) for name, addr in zip(names, hosts, strict=True)}
        self._prefix_len = network.prefixlen
        self.prefix = f"{PREFIX}{os.getpid()}-{next(_lab_ids)}-"
        self.nodes: tuple[str, ...] = tuple(names)
        self._hub = f"{self.prefix}_hub"
        self._blocked: frozenset[tuple[str, str]] = frozenset()
        self._processes: list[subprocess.Popen[Any]] = []
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "NetnsLab":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Create the hub, the node namespaces, the veth pairs and the nftables tables.

        On any failure everything created so far is removed before the error propagates.
        """
        if self._started:
            raise RuntimeError("lab already started")
        self._started = True
        atexit.register(self.close)
        try:
            _ip("netns", "add", self._hub)
            _ip("-n", self._hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self._hub, "link", "set", "br0", "up")
            for index, node in enumerate(self.nodes):
                ns = self.namespace(node)
                _ip("netns", "add", ns)
                _ip("-n", self._hub, "link", "add", f"v{index}", "type", "veth",
                    "peer", "name", "eth0", "netns", ns)
                _ip("-n", self._hub, "link", "set", f"v{index}", "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{self.address(node)}/{self._prefix_len}",
                    "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                self.run(node, ["nft", "-f", "-"], input=_NFT_TABLE)
        except BaseException:
            self.close()
            raise
        log.info("netns lab %s up: %s", self.prefix, self._addresses)

    def close(self) -> None:
        """Stop the lab's processes and delete its namespaces (and so its links and bridge)."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.close)
        for proc in self._processes:
            self._stop_process(proc)
        self._processes.clear()
        existing = set(_list_namespaces())
        for ns in [self.namespace(n) for n in self.nodes] + [self._hub]:
            if ns in existing:
                _kill_namespace(ns)
        log.info("netns lab %s removed", self.prefix)

    @staticmethod
    def _stop_process(proc: subprocess.Popen[Any]) -> None:
        """SIGTERM the process group of ``proc`` (it leads one), SIGKILL after 5 s, reap it."""
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    # ------------------------------------------------------------------ addressing / running

    def namespace(self, node: str) -> str:
        """Name of ``node``'s network namespace (for ``ip netns exec``)."""
        self._check_node(node)
        return f"{self.prefix}{node}"

    def address(self, node: str) -> str:
        """IPv4 address of ``node`` on the lab bridge."""
        self._check_node(node)
        return self._addresses[node]

    def _check_node(self, node: str) -> None:
        if node not in self._addresses:
            raise KeyError(f"unknown lab node {node!r}; nodes are {self.nodes}")

    def run(self, node: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``node``'s namespace to completion; output captured as text."""
        cmd = ["ip", "netns", "exec", self.namespace(node), *argv]
        log.debug("%s", " ".join(cmd))
        return subprocess.run(cmd, check=check, timeout=timeout, input=input,
                              capture_output=True, text=True)

    def popen(self, node: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``node``'s namespace as its own process group.

        The lab stops it on :meth:`close` (SIGTERM to the group, then SIGKILL); ``kwargs``
        go to :class:`subprocess.Popen` (e.g. ``stdout``, ``env``, ``cwd``).
        """
        cmd = ["ip", "netns", "exec", self.namespace(node), *argv]
        log.info("starting in %s: %s", node, " ".join(argv))
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        self._processes.append(proc)
        return proc

    @contextlib.contextmanager
    def entered(self, node: str) -> Iterator[None]:
        """Run the body with the *calling thread* inside ``node``'s network namespace.

        Sockets created in the body belong to that namespace for their whole life, so a
        client in the test process can talk to lab nodes. Threads already running are
        unaffected; threads *started* in the body inherit the namespace (Linux semantics),
        which is how a client library with its own I/O thread can be put in the lab.
        """
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/run/netns/{self.namespace(node)}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)

    def reachable(self, src: str, dst: str, *, timeout: float = 0.5) -> bool:
        """True if a TCP handshake from ``src`` to ``dst`` completes within ``timeout``.

        Uses a throwaway listener on an ephemeral port of ``dst``, so it needs no process
        in the lab; handy to confirm a partition or heal took effect.
        """
        with self.entered(dst):
            listener = socket.create_server((self.address(dst), 0))
        with listener:
            port = listener.getsockname()[1]
            with self.entered(src):
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with probe:
                probe.settimeout(timeout)
                try:
                    probe.connect((self.address(dst), port))
                except OSError:
                    return False
                return True

    # ------------------------------------------------------------------ faults

    @property
    def blocked(self) -> frozenset[tuple[str, str]]:
        """Directed (sender, receiver) pairs whose packets are currently dropped."""
        return self._blocked

    def block(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Make exactly these directed (sender, receiver) pairs drop packets; heal the rest."""
        wanted = frozenset(pairs)
        for src, dst in wanted:
            self._check_node(src)
            self._check_node(dst)
        for node in self.nodes:
            before = {s for s, d in self._blocked if d == node}
            after = {s for s, d in wanted if d == node}
            if before != after:
                self._set_block_in(node, sorted(self.address(s) for s in after))
        self._blocked = wanted
        log.info("lab %s blocked links: %s", self.prefix, sorted(wanted) or "none")

    def _set_block_in(self, node: str, sources: list[str]) -> None:
        """Atomically replace ``node``'s set of dropped source addresses."""
        script = "flush set inet hst block_in\n"
        if sources:
            script += f"add element inet hst block_in {{ {', '.join(sources)} }}\n"
        self.run(node, ["nft", "-f", "-"], input=script)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network into ``groups``; nodes listed in no group form one more group.

        Nodes in different groups cannot exchange packets in either direction.
        """
        sets = [set(g) for g in groups]
        listed = set().union(*sets)
        if sum(len(g) for g in sets) != len(listed):
            raise ValueError(f"a node appears in two groups: {groups!r}")
        rest = set(self.nodes) - listed
        if rest:
            sets.append(rest)
        group_of = {node: i for i, group in enumerate(sets) for node in group}
        self.block((a, b) for a in group_of for b in group_of if group_of[a] != group_of[b])

    def isolate(self, node: str) -> None:
        """Cut ``node`` off from every other node, both directions."""
        self.partition([node])

    def drop_one_way(self, src: str, dst: str) -> None:
        """Drop packets from ``src`` to ``dst`` only (``dst`` can still send to ``src``)."""
        self.block([(src, dst)])

    def heal(self) -> None:
        """Remove every fault."""
        self.block(())
