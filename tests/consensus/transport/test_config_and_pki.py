"""Mode checks, TransportSecurity validation, certificate issuance and ``hastate certs init``."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.exceptions import InvalidTag
from pysyncobj import SyncObj, SyncObjConf

from hastate.cli.certs import certs
from hastate.consensus import tls
from hastate.addresses import check_transport_mode
from hastate.consensus.transport import TransportSecurity, make_transport_class
from hastate.errors import ConfigError

from .conftest import Pki, free_ports


@pytest.mark.parametrize("addresses", [
    ["127.0.0.1:1", "127.0.0.2:2", "localhost:3", "[::1]:4"],
])
def test_plaintext_allowed_on_loopback_only(addresses: list[str]) -> None:
    check_transport_mode("plaintext", addresses)
    with pytest.raises(ConfigError, match=r"loopback: 10\.0\.0\.5:4321\. Use mode 'tls'"):
        check_transport_mode("plaintext", [*addresses, "10.0.0.5:4321"])
    with pytest.raises(ConfigError, match="not on loopback: db.example.com:1"):
        check_transport_mode("plaintext", ["db.example.com:1"])
    check_transport_mode("tls", ["10.0.0.5:4321"])
    with pytest.raises(ConfigError, match="unknown transport mode"):
        check_transport_mode("none", addresses)


def _syncobj(self_address: str, others: list[str], security: TransportSecurity,
             **conf: object) -> SyncObj:
    return SyncObj(self_address, others, SyncObjConf(autoTick=False, **conf),
                   transportClass=make_transport_class(security))


def test_syncobj_with_plaintext_on_a_public_address_is_refused() -> None:
    with pytest.raises(ConfigError, match="not on loopback: 10.1.2.3:4000"):
        _syncobj("127.0.0.1:4000", ["10.1.2.3:4000"], TransportSecurity(mode="plaintext"))
    with pytest.raises(ConfigError, match="not on loopback: 0.0.0.0:4000"):
        _syncobj("127.0.0.1:4000", ["127.0.0.1:4001"], TransportSecurity(mode="plaintext"),
                 bindAddress="0.0.0.0:4000")


def _listening_hosts(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) listening on ``port``."""
    hosts = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            hosts.add(host)
    return hosts


def test_plaintext_binds_loopback_not_every_interface() -> None:
    port, other = free_ports(2)
    node = _syncobj(f"127.0.0.1:{port}", [f"127.0.0.1:{other}"],
                    TransportSecurity(mode="plaintext"))
    try:
        deadline = time.monotonic() + 5
        while not _listening_hosts(port) and time.monotonic() < deadline:
            node.doTick(0.05)
        assert _listening_hosts(port) == {"0100007F"}  # 127.0.0.1, not 00000000
    finally:
        node._doDestroy()


def test_security_settings_are_validated(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="needs ca, cert, key"):
        TransportSecurity(mode="tls")
    with pytest.raises(ConfigError, match="at least 32 random bytes"):
        TransportSecurity(mode="psk", psk=b"password")
    with pytest.raises(ConfigError, match="same node id"):
        pki.security("n1", {"a:1": "n1", "b:2": "n1"})
    with pytest.raises(ConfigError, match="node id"):
        pki.security("n1", {"a:1": "n/1"})
    with pytest.raises(ConfigError, match="at least 65536"):
        TransportSecurity(mode="plaintext", max_frame_bytes=10)


def test_node_must_hold_the_certificate_of_its_own_id(pki: Pki) -> None:
    ids = {"127.0.0.1:4000": "n1", "127.0.0.1:4001": "n2"}
    with pytest.raises(ConfigError, match=r"names node ids \['n2'\], but this node"):
        _syncobj("127.0.0.1:4000", ["127.0.0.1:4001"],
                 pki.security("n2", ids))
    with pytest.raises(ConfigError, match="no node id configured for Raft address"):
        _syncobj("127.0.0.1:4000", ["127.0.0.1:4002"],
                 pki.security("n1", ids))
    with pytest.raises(ConfigError, match="password"):
        _syncobj("127.0.0.1:4000", ["127.0.0.1:4001"],
                 pki.security("n1", ids), password="x")


def test_issued_certificate_names_one_node_and_chains_to_the_ca() -> None:
    ca = tls.create_ca()
    issued = tls.issue_node_cert(ca, "tokyo-1")
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:hastate:node:tokyo-1"]
    assert tls.peer_node_id({"subjectAltName": (("URI", "urn:hastate:node:tokyo-1"),)}) \
        == "tokyo-1"
    assert tls.peer_node_id({"subjectAltName": (("URI", "urn:hastate:node:a"),
                                                ("URI", "urn:hastate:node:b"))}) is None
    assert tls.peer_node_id({"subjectAltName": (("DNS", "tokyo-1"),)}) is None


def test_psk_frames_fail_when_tampered_replayed_or_keyed_differently() -> None:
    psk, c_nonce, s_nonce = b"k" * 32, b"c" * 32, b"s" * 32
    client = tls.PskCipher(psk, c_nonce, s_nonce, is_client=True)
    server = tls.PskCipher(psk, c_nonce, s_nonce, is_client=False)
    first, second = client.seal(b"one"), client.seal(b"two")
    assert server.open(first) == b"one"
    with pytest.raises(InvalidTag):  # replay of frame 0 where frame 1 is expected
        server.open(first)
    other = tls.PskCipher(b"x" * 32, c_nonce, s_nonce, is_client=False)
    with pytest.raises(InvalidTag):
        other.open(first)
    reflected = tls.PskCipher(psk, c_nonce, s_nonce, is_client=True)
    with pytest.raises(InvalidTag):  # a client's own frame reflected back to it
        reflected.open(first)
    tampered = bytearray(second)
    tampered[0] ^= 1
    with pytest.raises(InvalidTag):
        tls.PskCipher(psk, c_nonce, s_nonce, is_client=False).open(bytes(tampered))


def _check_outputs(out: Path, ids: list[str]) -> None:
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    for node_id in ids:
        assert stat.S_IMODE((out / f"{node_id}.key").stat().st_mode) == 0o600
        assert tls.certificate_node_ids(out / f"{node_id}.pem") == [node_id]
        x509.load_pem_x509_certificate((out / f"{node_id}.pem").read_bytes()) \
            .verify_directly_issued_by(ca)
        tls.server_context(out / "ca.pem", out / f"{node_id}.pem", out / f"{node_id}.key")


def test_certs_init_from_node_ids(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    runner = CliRunner()
    result = runner.invoke(certs, ["init", "--node", "n1", "--node", "n2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    _check_outputs(out, ["n1", "n2"])
    again = runner.invoke(certs, ["init", "--node", "n1", "--out", str(out)])
    assert again.exit_code != 0 and "--force" in again.output
    forced = runner.invoke(certs, ["init", "--node", "n1", "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output


def test_certs_init_from_cluster_file(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text('[cluster]\nname = "t"\n' + "".join(
        f'[[nodes]]\nid = "{node_id}"\nraft = "127.0.0.1:{4000 + i}"\ndata_dir = "d{i}"\n'
        for i, node_id in enumerate(["ny", "ldn", "tyo"])))
    result = CliRunner().invoke(certs, ["init", "--config", str(config),
                                        "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    _check_outputs(tmp_path / "out", ["ny", "ldn", "tyo"])


@pytest.mark.parametrize("args", [
    [],                                    # neither --config nor --node
    ["--node", "n1", "--node", "n1"],      # duplicate
    ["--node", "../etc/passwd"],           # not a node id
])
def test_certs_init_refuses_bad_input(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(certs, ["init", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert not (tmp_path / "out" / "ca.key").exists()
