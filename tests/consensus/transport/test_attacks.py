"""Hostile peers against real nodes: each is refused, nothing runs, the cluster keeps serving."""

from __future__ import annotations

import gzip
import os
import pickle
import socket
import ssl
import struct
import time
import zlib
from pathlib import Path
from typing import Iterator

import pytest

from hastate.consensus import wire

from . import peers
from .conftest import Cluster, Launcher, NodeProcess, Pki, loopback_addresses


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Launcher]:
    launched = Launcher(tmp_path_factory.mktemp("attacks"), pki)
    yield launched
    launched.stop_all()


@pytest.fixture(scope="module")
def tls_cluster(module_launcher: Launcher) -> Cluster:
    cluster = module_launcher.cluster("tls")
    cluster.leader()
    return cluster


@pytest.fixture(scope="module")
def plain_cluster(module_launcher: Launcher) -> Cluster:
    cluster = module_launcher.cluster("plaintext")
    cluster.leader()
    return cluster


def wait_for_log(node: NodeProcess, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.log():
        assert time.monotonic() < deadline, f"{text!r} not in log:\n{node.log()[-3000:]}"
        time.sleep(0.05)


def assert_still_serving(cluster: Cluster) -> None:
    leader = cluster.leader()
    value = leader.call("incr")["value"]
    cluster.wait_value(value)


# -- TLS identity ---------------------------------------------------------------------------

@pytest.mark.parametrize("cert, claim, reason", [
    (None, "n2", "peer did not return a certificate"),
    ("rogue-n1", "n1", "certificate verify failed"),
    ("expired-n1", "n1", "certificate has expired"),
    ("n9", "n2", "certificate for node id 'n9' is not a cluster member"),
    ("n3", "n2", "certificate for 'n3' cannot speak as"),
], ids=["no-cert", "other-ca", "expired", "non-member", "impersonation"])
def test_tls_peer_is_refused(tls_cluster: Cluster, pki: Pki, cert: str | None, claim: str,
                             reason: str) -> None:
    target = tls_cluster.nodes[0]  # lowest address: every other member dials it
    claimed_address = tls_cluster.nodes[int(claim[1]) - 1].address
    files = pki.node(cert) if cert else {"ca": pki.ca()}
    try:
        sock = peers.tls_client(target.address, files["ca"], files.get("cert"),
                                files.get("key"))
        sock.sendall(peers.hello(claimed_address))
        assert peers.closed_by_peer(sock)
    except ssl.SSLError:
        pass  # refused during the client's side of the handshake: refused all the same
    wait_for_log(target, reason)
    assert_still_serving(tls_cluster)


def test_authenticated_member_cannot_run_code_through_a_log_entry(module_launcher: Launcher,
                                                                  pki: Pki,
                                                                  tmp_path: Path) -> None:
    """A peer with a valid member certificate acts as leader towards a fresh follower. A
    plain-value entry is accepted and applied (the control: this path reaches PySyncObj's
    unpickling apply), the next entry, a code-running pickle, is refused on arrival."""
    addresses = loopback_addresses(3)
    target = module_launcher.node("tls", addresses[0], addresses, "n1")
    files = pki.node("n2")
    sock = peers.tls_client(target.address, files["ca"], files["cert"], files["key"])
    incr_by_5 = b"\x00" + pickle.dumps((0, (5,)), 2)  # Counter.incr is method id 0
    sock.sendall(peers.hello(addresses[1]) + peers.frame(
        {"type": "append_entries", "term": 5, "commit_index": 2, "prevLogIdx": 1,
         "prevLogTerm": 0, "entries": [[incr_by_5, 2, 5]]}))
    deadline = time.monotonic() + 5
    while target.call("status")["value"] != 5:
        assert time.monotonic() < deadline, target.log()[-3000:]
        time.sleep(0.05)

    canary = tmp_path / "pwned"
    evil = b"\x00" + pickle.dumps((0, (peers.Touch(canary),)), 2)
    sock.sendall(peers.frame(
        {"type": "append_entries", "term": 5, "commit_index": 3, "prevLogIdx": 2,
         "prevLogTerm": 5, "entries": [[evil, 3, 5]]}))
    assert peers.closed_by_peer(sock, replies_ok=True)  # after the control's next_node_idx
    wait_for_log(target, "forbidden global 'posix system'")
    time.sleep(0.5)  # PySyncObj would have applied it on its next tick
    assert not canary.exists()
    assert target.call("status")["value"] == 5


def test_authenticated_member_cannot_install_a_pickled_snapshot(module_launcher: Launcher,
                                                                 pki: Pki,
                                                                 tmp_path: Path) -> None:
    """PySyncObj's default (in-memory) snapshot loader unpickles what the leader sends."""
    addresses = loopback_addresses(3)
    target = module_launcher.node("tls", addresses[0], addresses, "n1")
    canary = tmp_path / "pwned"
    files = pki.node("n2")
    sock = peers.tls_client(target.address, files["ca"], files["cert"], files["key"])
    snapshot = gzip.compress(pickle.dumps(peers.Touch(canary)))
    sock.sendall(peers.hello(addresses[1]) + peers.frame(
        {"type": "append_entries", "term": 5, "commit_index": 1,
         "serialized": [snapshot, True, True]}))
    assert peers.closed_by_peer(sock)
    wait_for_log(target, "snapshot install refused")
    time.sleep(0.5)
    assert not canary.exists()
    assert target.alive


def test_dialed_node_must_present_the_id_of_its_address(module_launcher: Launcher, pki: Pki
                                                       ) -> None:
    """The highest address dials the others; a server at n1's address holding n2's valid
    certificate (a member impersonating another) is dropped after the handshake."""
    addresses = loopback_addresses(3)
    files = pki.node("n2")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files["cert"], files["key"])
    ctx.load_verify_locations(files["ca"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(peers.split(addresses[0]))
    dialer = module_launcher.node("tls", addresses[2], addresses, "n3")
    listener.settimeout(10)
    with listener, ctx.wrap_socket(listener.accept()[0], server_side=True) as conn:
        assert peers.closed_by_peer(conn)
    wait_for_log(dialer, f"{addresses[0]} must present node id 'n1', "
                         "its certificate says 'n2'")


# -- hostile bytes (plaintext, so they reach the parser) ---------------------------------------

def _pickle_frames(canary: Path) -> dict[str, bytes]:
    payload = zlib.compress(pickle.dumps(peers.Touch(canary)))
    admin = zlib.compress(pickle.dumps(["status"]))
    return {
        "pysyncobj-pickle": struct.pack("i", len(payload)) + payload,
        "pysyncobj-admin": struct.pack("i", len(admin)) + admin,
        "pickle-in-wire-frame": wire.encode_frame(pickle.dumps(peers.Touch(canary))),
        "hello-then-pickle": (peers.hello("127.0.0.1:1")
                              + wire.encode_frame(pickle.dumps(peers.Touch(canary)))),
    }


@pytest.mark.parametrize("name", list(_pickle_frames(Path("x"))))
def test_pickle_payloads_are_dropped_without_running(plain_cluster: Cluster, tmp_path: Path,
                                                      name: str) -> None:
    canary = tmp_path / "pwned"
    target = plain_cluster.nodes[0]
    sock = peers.tcp(target.address)
    sock.sendall(_pickle_frames(canary)[name])
    assert peers.closed_by_peer(sock)
    time.sleep(0.2)
    assert not canary.exists()
    assert target.alive
    assert_still_serving(plain_cluster)


@pytest.mark.parametrize("data, reason", [
    (wire.encode_frame(os.urandom(512)), "closing Raft connection"),
    (os.urandom(512), "closing Raft connection"),
    (peers.frame(["status"]), "message must be a map"),            # PySyncObj admin command
    (peers.frame({"type": "request_vote", "term": 1, "last_log_index": 1,
                  "last_log_term": 1}), "first message must be hello"),
    (peers.hello("127.0.0.1:1"), "refusing Raft connections from 127.0.0.1:1: not in this"),
], ids=["garbage-frame", "garbage-bytes", "admin-status", "no-hello", "unknown-address"])
def test_bad_openings_are_dropped(plain_cluster: Cluster, data: bytes, reason: str) -> None:
    target = plain_cluster.nodes[0]
    sock = peers.tcp(target.address)
    sock.sendall(data)
    assert peers.closed_by_peer(sock)
    wait_for_log(target, reason)
    assert_still_serving(plain_cluster)


def test_silent_connection_is_dropped_after_the_timeout(plain_cluster: Cluster) -> None:
    sock = peers.tcp(plain_cluster.nodes[0].address)
    assert peers.closed_by_peer(sock, timeout=4.0)  # connectionTimeout is 1 s in tests
    wait_for_log(plain_cluster.nodes[0], "no valid hello within 1.0s")


def test_one_gib_announcement_is_refused_before_allocating(plain_cluster: Cluster) -> None:
    target = plain_cluster.nodes[0]
    rss_before = target.rss_kib()
    sock = peers.tcp(target.address)
    sock.sendall(struct.pack(">BI", wire.PROTOCOL_VERSION, 1 << 30))
    sent = 0
    chunk = b"\0" * (1 << 20)
    try:  # keep streaming the announced body: a transport that buffered it would grow
        while sent < 64 << 20:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert sent < 64 << 20, "the node kept reading a frame it should have refused"
    assert peers.closed_by_peer(sock)
    wait_for_log(target, "peer announced a frame of 1073741824 bytes")
    assert target.rss_kib() - rss_before < 16 * 1024
    assert_still_serving(plain_cluster)
