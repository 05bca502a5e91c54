"""Real 3-node PySyncObj clusters (subprocesses, loopback) on SecureTransport."""

from __future__ import annotations

import logging
import os
import time

from hastate.consensus import tls, wire

from . import peers
from .conftest import Launcher

logger = logging.getLogger(__name__)


def test_tls_cluster_replicates_and_survives_killing_the_leader(launcher: Launcher) -> None:
    cluster = launcher.cluster("tls")
    leader = cluster.leader()
    follower = next(node for node in cluster.nodes if node is not leader)
    for _ in range(5):
        assert "value" in leader.call("incr"), leader.log()[-2000:]
    assert follower.call("incr", by=10)["value"] == 15  # forwarded to the leader
    cluster.wait_value(15)

    killed_at = time.monotonic()
    leader.kill()
    new_leader = cluster.leader(timeout=15)
    assert new_leader is not leader
    assert new_leader.call("incr", by=100)["value"] == 115
    logger.info("first commit on the new leader %.2fs after kill -9",
                time.monotonic() - killed_at)
    cluster.wait_value(115)
    for node in cluster.alive:  # reconnect attempts to the dead node may warn; nothing worse
        log = node.log()
        assert "ERROR" not in log and "Traceback" not in log, log[-3000:]


def test_large_entries_cross_as_single_checked_frames(launcher: Launcher) -> None:
    """PySyncObj sends entries >= appendEntriesBatchSizeBytes as pickled chunks; those are
    collapsed into one ``entries`` frame, including when PySyncObj labels a chunk before
    the last one 'finish' (sizes just under 3 batches trigger that)."""
    batch = 4096
    cluster = launcher.cluster("tls", conf={"appendEntriesBatchSizeBytes": batch})
    leader = cluster.leader()
    sizes = [*range(3 * batch - 64, 3 * batch, 8), 200_000]
    for size in sizes:
        assert leader.call("blob", size=size) == {"size": size}
    deadline = time.monotonic() + 10
    while any(node.call("status")["blobs"] != sizes for node in cluster.nodes):
        assert time.monotonic() < deadline, [n.call("status")["blobs"] for n in cluster.nodes]
        time.sleep(0.05)


def test_psk_cluster_carries_hastate_messages_and_refuses_other_keys(launcher: Launcher
                                                                     ) -> None:
    cluster = launcher.cluster("psk")
    leader = cluster.leader()
    follower = next(node for node in cluster.nodes if node is not leader)
    ping = {"type": "hastate_lease_ping", "term": 1, "sent": 12.5}
    leader.call("send_ext", to=follower.address, message=ping)
    deadline = time.monotonic() + 5
    while not leader.call("status")["received"]:
        assert time.monotonic() < deadline, "no pong came back"
        time.sleep(0.05)
    assert follower.call("status")["received"] == [{"from": leader.address, **ping}]
    assert leader.call("status")["received"] == [
        {"from": follower.address, **ping, "type": "hastate_lease_pong"}]

    # A peer with another key: the nonce exchange works, its first sealed frame does not.
    sock = peers.tcp(cluster.nodes[0].address)
    decoder = wire.FrameDecoder()
    server_nonce = decoder.feed(sock.recv(4096))[0]
    client_nonce = os.urandom(tls.PSK_NONCE_BYTES)
    sock.sendall(wire.encode_frame(client_nonce))
    wrong = tls.PskCipher(b"w" * 32, client_nonce, server_nonce, is_client=True)
    sock.sendall(wire.encode_frame(wrong.seal(peers.hello(cluster.nodes[1].address)[5:])))
    assert peers.closed_by_peer(sock)
    assert "failed PSK authentication" in cluster.nodes[0].log()
    assert leader.call("incr")["value"] == 1


def test_plaintext_loopback_cluster_replicates(launcher: Launcher) -> None:
    cluster = launcher.cluster("plaintext")
    assert cluster.leader().call("incr", by=3)["value"] == 3
    cluster.wait_value(3)
