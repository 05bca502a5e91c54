"""Fixtures for transport tests: a throw-away PKI and real PySyncObj nodes in subprocesses."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from hastate.consensus import tls
from hastate.consensus.transport import TransportSecurity
from hastate.testing import free_port
from hastate.testing.stdio import JsonLinesProcess

NODE_MAIN = Path(__file__).with_name("node_main.py")
#: Fast Raft timing so elections and failover fit in the test budget.
FAST_CONF = {"raftMinTimeout": 0.3, "raftMaxTimeout": 0.6, "appendEntriesPeriod": 0.03,
             "connectionTimeout": 1.0, "connectionRetryTime": 0.2, "autoTickPeriod": 0.02}
PSK = "8f" * 32


@dataclass(frozen=True)
class Pki:
    """Certificates in ``root``: the cluster CA, one cert per node id, and bad ones."""

    root: Path

    def ca(self) -> str:
        return str(self.root / "ca.pem")

    def node(self, name: str) -> dict[str, str]:
        """TransportSecurity fields for the cert/key pair named ``name``."""
        return {"ca": self.ca(), "cert": str(self.root / f"{name}.pem"),
                "key": str(self.root / f"{name}.key")}

    def security(self, name: str, node_ids: dict[str, str]) -> TransportSecurity:
        """tls-mode settings with the cert/key pair named ``name``."""
        return TransportSecurity(mode="tls", ca=self.ca(), cert=str(self.root / f"{name}.pem"),
                                 key=str(self.root / f"{name}.key"), node_ids=node_ids)


def _write_pair(root: Path, name: str, issued: tls.Issued) -> None:
    (root / f"{name}.pem").write_bytes(issued.cert_pem)
    tls.write_private(root / f"{name}.key", issued.key_pem)


def make_pki(root: Path) -> Pki:
    """CA + n1..n3 (members), n9 (same CA, not a member), rogue-n1 (other CA),
    expired-n1 (cluster CA, expired two days ago), all under ``root``."""
    ca = tls.create_ca()
    (root / "ca.pem").write_bytes(ca.cert_pem)
    for node_id in ("n1", "n2", "n3", "n9"):
        _write_pair(root, node_id, tls.issue_node_cert(ca, node_id))
    _write_pair(root, "rogue-n1", tls.issue_node_cert(tls.create_ca("rogue CA"), "n1"))
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    _write_pair(root, "expired-n1", tls.issue_node_cert(ca, "n1", days=1, not_before=past))
    return Pki(root)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One throw-away PKI for the whole session (see :func:`make_pki`)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1."""
    return [free_port() for _ in range(count)]


class NodeProcess(JsonLinesProcess):
    """One ``node_main.py`` subprocess; :meth:`call` sends a request and waits for the answer."""

    def __init__(self, spec: dict[str, Any], log_path: Path) -> None:
        super().__init__([sys.executable, str(NODE_MAIN), json.dumps(spec)], log_path)
        self.address: str = spec["self"]
        started = self.start(20.0)
        assert started == {"started": True}, started

    def call(self, op: str, timeout: float = 15.0, **kwargs: Any) -> dict[str, Any]:
        return self.request({"op": op, **kwargs}, timeout)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


class Cluster:
    """Nodes started together; helpers to find the leader and wait for agreement."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.nodes = nodes

    @property
    def alive(self) -> list[NodeProcess]:
        return [node for node in self.nodes if node.alive]

    def leader(self, timeout: float = 15.0) -> NodeProcess:
        """The node that every live node agrees is leader (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [(node, node.call("status")) for node in self.alive]
            leaders = {status["leader"] for _, status in statuses}
            if len(leaders) == 1 and None not in leaders:
                for node, status in statuses:
                    if status["is_leader"]:
                        return node
            time.sleep(0.1)
        raise AssertionError(f"no agreed leader within {timeout}s: "
                             f"{[node.call('status') for node in self.alive]}")

    def wait_value(self, value: int, timeout: float = 10.0) -> None:
        """Wait until every live node has applied the counter up to ``value``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(node.call("status")["value"] == value for node in self.alive):
                return
            time.sleep(0.05)
        raise AssertionError(f"values never converged on {value}: "
                             f"{[node.call('status')['value'] for node in self.alive]}")


def node_ids(addresses: list[str]) -> dict[str, str]:
    """n1, n2, ... in address order."""
    return {address: f"n{i + 1}" for i, address in enumerate(addresses)}


def security_spec(mode: str, pki: Pki, name: str, addresses: list[str]) -> dict[str, Any]:
    """JSON-able TransportSecurity fields for node ``name`` in ``mode``."""
    if mode == "tls":
        return {"mode": "tls", **pki.node(name), "node_ids": node_ids(addresses)}
    if mode == "psk":
        return {"mode": "psk", "psk_hex": PSK}
    return {"mode": mode}  # plaintext, or "upstream" (PySyncObj's transport, benchmarks only)


def loopback_addresses(count: int) -> list[str]:
    """Free 127.0.0.1 addresses sorted as PySyncObj compares them (the later one dials)."""
    return sorted(f"127.0.0.1:{port}" for port in free_ports(count))


class Launcher:
    """Starts nodes and clusters with logs under ``root``; :meth:`stop_all` kills them all."""

    def __init__(self, root: Path, pki: Pki) -> None:
        self.root = root
        self.pki = pki
        self._nodes: list[NodeProcess] = []

    def node(self, mode: str, address: str, addresses: list[str], name: str,
             conf: dict[str, Any] | None = None) -> NodeProcess:
        spec = {"self": address, "others": [a for a in addresses if a != address],
                "security": security_spec(mode, self.pki, name, addresses),
                "conf": {**FAST_CONF, **(conf or {})}}
        node = NodeProcess(spec, self.root / f"{mode}-{name}-{len(self._nodes)}.log")
        self._nodes.append(node)
        return node

    def cluster(self, mode: str, size: int = 3, conf: dict[str, Any] | None = None) -> Cluster:
        addresses = loopback_addresses(size)
        return Cluster([self.node(mode, address, addresses, f"n{i + 1}", conf)
                        for i, address in enumerate(addresses)])

    def stop_all(self) -> None:
        for node in self._nodes:
            node.kill()


@pytest.fixture
def launcher(tmp_path: Path, pki: Pki) -> Iterator[Launcher]:
    """A :class:`Launcher` whose nodes are killed when the test ends."""
    launched = Launcher(tmp_path, pki)
    yield launched
    launched.stop_all()
