"""Channel security for the Raft transport: mutual TLS 1.3 with node-id certificates, and PSK.

**Identity.** Every node's certificate carries its node id as a URI subject alternative name
``urn:hastate:node:<id>`` (see :data:`NODE_URI_PREFIX`); the certificate must be signed by the
cluster CA. The id, not the host name, is what the transport checks: hosts move, ids do not,
and a URI SAN cannot be confused with a DNS name a public CA might also sign. Host name
checking is therefore off and :func:`peer_node_id` reads the id from the verified chain.

**PSK** is the fallback for clusters that cannot run a CA: both ends exchange 32-byte random
nonces, derive per-direction AES-256-GCM keys with HKDF-SHA256 from the shared key and both
nonces, and seal every frame with a counter nonce. That gives confidentiality, integrity and
replay/reorder protection, and a peer without the key cannot get a single message accepted;
but every key holder is equal, so a node's identity is the address it claims.

Certificate issuance (for ``hastate certs init`` and the tests) uses ``cryptography``.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hastate.errors import ConfigError

#: URI SAN prefix under which a certificate names its node id.
NODE_URI_PREFIX = "urn:hastate:node:"
#: What a node id may look like (it is embedded in a URI and in file names).
NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
#: Length of the random nonce each side sends in the PSK handshake.
PSK_NONCE_BYTES = 32
#: Shortest pre-shared key accepted (it must be random, not a password).
PSK_MIN_BYTES = 32

_PSK_INFO = b"hastate raft psk v1"
_GCM_NONCE = struct.Struct(">4xQ")


def check_node_id(node_id: str) -> str:
    """Return ``node_id`` if it is a valid node id, else raise :class:`ConfigError`."""
    if not isinstance(node_id, str) or not NODE_ID_PATTERN.match(node_id):
        raise ConfigError("a node id is 1-63 letters, digits, '.', '_' or '-', starting with "
                          "a letter or digit", field="node id", value=node_id)
    return node_id


def node_uri(node_id: str) -> str:
    """The URI SAN that names ``node_id`` in a certificate."""
    return NODE_URI_PREFIX + check_node_id(node_id)


# -- TLS contexts ------------------------------------------------------------------------

def _context(server_side: bool, ca: str | os.PathLike[str], cert: str | os.PathLike[str],
             key: str | os.PathLike[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity is the node-id SAN, checked by the transport
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if server_side:
        ctx.num_tickets = 0  # no session resumption: every connection shows its certificate
    try:
        ctx.load_verify_locations(cafile=os.fspath(ca))
        ctx.load_cert_chain(certfile=os.fspath(cert), keyfile=os.fspath(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS material (ca={ca}, cert={cert}, key={key}): {exc}",
                          field="transport.tls") from None
    return ctx


def server_context(ca: str | os.PathLike[str], cert: str | os.PathLike[str],
                   key: str | os.PathLike[str]) -> ssl.SSLContext:
    """TLS 1.3 server context that requires a client certificate signed by ``ca``."""
    return _context(True, ca, cert, key)


def client_context(ca: str | os.PathLike[str], cert: str | os.PathLike[str],
                   key: str | os.PathLike[str]) -> ssl.SSLContext:
    """TLS 1.3 client context that presents ``cert`` and requires a server cert from ``ca``."""
    return _context(False, ca, cert, key)


def peer_node_id(peercert: dict[str, Any] | None) -> str | None:
    """The node id in a verified peer certificate (``SSLSocket.getpeercert()``), or None.

    None also when the certificate names zero or several node ids: a certificate must speak
    for exactly one node.
    """
    if not peercert:
        return None
    ids = [value[len(NODE_URI_PREFIX):] for kind, value in peercert.get("subjectAltName", ())
           if kind == "URI" and value.startswith(NODE_URI_PREFIX)]
    if len(ids) != 1 or not NODE_ID_PATTERN.match(ids[0]):
        return None
    return ids[0]


def certificate_node_ids(cert_path: str | os.PathLike[str]) -> list[str]:
    """Node ids named by the (first) certificate in a PEM file."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [uri[len(NODE_URI_PREFIX):]
            for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
            if uri.startswith(NODE_URI_PREFIX)]


# -- issuance ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issued:
    """A PEM certificate and its PEM (unencrypted PKCS#8) private key."""

    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _validity(days: int, not_before: _dt.datetime | None) -> tuple[_dt.datetime, _dt.datetime]:
    start = not_before or (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5))
    return start, start + _dt.timedelta(days=days)


def create_ca(name: str = "hastate cluster CA", days: int = 3650) -> Issued:
    """A self-signed ECDSA P-256 CA that may sign node certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start, end = _validity(days, None)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_node_cert(ca: Issued, node_id: str, days: int = 825,
                    not_before: _dt.datetime | None = None) -> Issued:
    """A node certificate for ``node_id`` (URI SAN), usable as TLS client and server."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key must be an ECDSA key (as made by `hastate certs init`)",
                          field="ca.key")
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, not_before)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(node_uri(node_id))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (0600), even if it existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


# -- PSK -------------------------------------------------------------------------------------

def check_psk(psk: bytes | None) -> bytes:
    """Return ``psk`` if it is long enough to be a random key, else raise :class:`ConfigError`."""
    if not isinstance(psk, bytes) or len(psk) < PSK_MIN_BYTES:
        raise ConfigError(f"the pre-shared key must be at least {PSK_MIN_BYTES} random bytes "
                          "(e.g. bytes.fromhex of `openssl rand -hex 32`)", field="transport.psk")
    return psk


class PskCipher:
    """Seals and opens the frames of one PSK connection (AES-256-GCM, counter nonces).

    Keys are per connection and per direction: HKDF-SHA256 over the PSK, salted with the
    client's then the server's nonce. A frame that fails to open (wrong key, tampered,
    replayed, reordered) raises ``cryptography.exceptions.InvalidTag``.
    """

    #: Bytes a sealed body is longer than its plaintext (the GCM tag).
    OVERHEAD = 16

    def __init__(self, psk: bytes, client_nonce: bytes, server_nonce: bytes,
                 is_client: bool) -> None:
        keys = HKDF(algorithm=hashes.SHA256(), length=64, salt=client_nonce + server_nonce,
                    info=_PSK_INFO).derive(check_psk(psk))
        client_to_server, server_to_client = AESGCM(keys[:32]), AESGCM(keys[32:])
        self._sealer = client_to_server if is_client else server_to_client
        self._opener = server_to_client if is_client else client_to_server
        self._sent = 0
        self._received = 0

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt and authenticate the next outgoing frame body."""
        sealed = self._sealer.encrypt(_GCM_NONCE.pack(self._sent), plaintext, None)
        self._sent += 1
        return sealed

    def open(self, sealed: bytes) -> bytes:
        """Authenticate and decrypt the next incoming frame body."""
        plaintext = self._opener.decrypt(_GCM_NONCE.pack(self._received), sealed, None)
        self._received += 1
        return plaintext
