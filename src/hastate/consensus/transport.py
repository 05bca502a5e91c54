"""``SecureTransport``: PySyncObj's TCP transport without pickle, with TLS or PSK, and bounded.

PySyncObj 0.3.17's ``TCPTransport`` unpickles every frame it receives, trusts the address a
peer claims, buffers announced frames of any size and answers admin commands ('status',
'add', 'remove', 'transfer') on the Raft port. This subclass keeps PySyncObj's connection
bookkeeping (who dials whom, reconnects, node add/drop) and replaces everything that touches
the network:

* :class:`SecureConnection` (instead of ``TcpConnection``) speaks :mod:`hastate.consensus.wire`
  frames on a non-blocking socket driven by PySyncObj's poller, with the TLS handshake or the
  PSK nonce exchange done in the same event loop (``SSLWantRead/WriteError`` just wait for
  the next event);
* :class:`SecureServer` (instead of ``TcpServer``) accepts sockets;
* identity: in ``tls`` mode a connection is accepted only from a certificate signed by the
  cluster CA whose node id is a configured member, the ``hello`` address a peer claims must
  map to that id, and a node we dial must present the id configured for its address;
* utility (admin) messages are never dispatched: the first message must be ``hello``;
* snapshot chunks are refused unless the node installs snapshots with a non-pickle
  deserializer (PySyncObj's default unpickles them);
* ``hastate_*`` messages go to the ``on_extension_message`` handler when one is given, else
  to SyncObj's message callback like the others (``HastateSyncObj`` handles them there).

Use :func:`make_transport_class` to bind a :class:`TransportSecurity` to a transport class and
pass that as ``SyncObj(..., transportClass=...)``.

Length: the transport's configuration, connection state machine and server in one module;
they split along those lines into a package of their own.

Threading: connections are only touched by the SyncObj tick thread.
:meth:`SecureTransport.send` (which PySyncObj's ``transferLeadership`` calls from the
caller's thread) and :meth:`SecureTransport.send_extension` may be called from any thread:
a call from another thread is queued and the tick thread is woken through a pipe to send it.
"""

from __future__ import annotations

import collections
import enum
import functools
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping

import pysyncobj.pickle
from cryptography.exceptions import InvalidTag
from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.poller import POLL_EVENT_TYPE, Poller
from pysyncobj.tcp_connection import CONNECTION_STATE, set_keepalive
from pysyncobj.transport import TCPTransport

from hastate.addresses import check_transport_mode
from hastate.consensus import tls, wire
from hastate.errors import ConfigError

logger = logging.getLogger(__name__)

Mode = Literal["plaintext", "tls", "psk"]
#: Incoming connections allowed to be mid-handshake (or awaiting ``hello``) at once.
MAX_PENDING_CONNECTIONS = 64
#: Largest slice handed to one ``send`` call (bounds the copy TLS makes per record batch).
_WRITE_CHUNK = 256 * 1024
_WILDCARD_HOSTS = ("0.0.0.0", "::")

#: Called on the tick thread with the sending node and a validated ``hastate_*`` message.
ExtensionHandler = Callable[[TCPNode, dict[str, Any]], None]


@dataclass(frozen=True)
class TransportSecurity:
    """How a node secures its Raft connections (see docs/security.md).

    ``tls`` needs ``ca``, ``cert`` and ``key`` (PEM paths) and ``node_ids`` mapping every
    node's Raft address ("host:port") to the node id in its certificate. ``psk`` needs
    ``psk`` (at least 32 random bytes, the same on every node). ``plaintext`` needs nothing
    but is refused unless every address is on loopback
    (:func:`hastate.addresses.check_transport_mode`).
    """

    mode: Mode = "tls"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    psk: bytes | None = None
    max_frame_bytes: int = wire.DEFAULT_MAX_FRAME_BYTES
    node_ids: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_transport_mode(self.mode, ())
        if type(self.max_frame_bytes) is not int or self.max_frame_bytes < 64 * 1024:
            raise ConfigError("must be an integer of at least 65536 bytes",
                              field="transport.max_frame_bytes", value=self.max_frame_bytes)
        ids = list(self.node_ids.values())
        for node_id in ids:
            tls.check_node_id(node_id)
        if len(set(ids)) != len(ids):
            raise ConfigError("two addresses map to the same node id",
                              field="transport.node_ids", value=dict(self.node_ids))
        if self.mode == "tls":
            missing = [name for name in ("ca", "cert", "key") if not getattr(self, name)]
            if missing:
                raise ConfigError(f"mode 'tls' needs {', '.join(missing)} (PEM file paths; "
                                  "create them with `hastate certs init`)",
                                  field="transport.tls")
        if self.mode == "psk":
            tls.check_psk(self.psk)


# -- connection -----------------------------------------------------------------------------

class _Phase(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"        # TCP connect in progress (outgoing) / not started (incoming)
    TLS_HANDSHAKE = "tls-handshake"
    PSK_HANDSHAKE = "psk-handshake"  # our nonce sent, waiting for the peer's
    OPEN = "open"


_CONNECTION_STATE = {
    _Phase.IDLE: CONNECTION_STATE.DISCONNECTED,
    _Phase.CONNECTING: CONNECTION_STATE.CONNECTING,
    _Phase.TLS_HANDSHAKE: CONNECTION_STATE.CONNECTING,
    _Phase.PSK_HANDSHAKE: CONNECTION_STATE.CONNECTING,
    _Phase.OPEN: CONNECTION_STATE.CONNECTED,
}


class SecureConnection:
    """One Raft connection on PySyncObj's poller; API-compatible with ``TcpConnection``.

    Frames are :mod:`hastate.consensus.wire` frames (sealed with :class:`tls.PskCipher` in psk
    mode, inside TLS in tls mode). ``onConnected`` fires once the channel is secured (after
    the TLS handshake, or the PSK nonce exchange); ``peer_id`` then holds the node id from
    the peer's certificate (tls mode). Any protocol violation closes the connection.

    Timeouts (checked by :meth:`check_timeout` on every tick): a connection must be secured
    within ``timeout`` seconds, and once open, the peer must send something within
    ``timeout`` seconds of a message we sent it. Idle connections (no traffic either way,
    e.g. between two followers) are kept.
    """

    def __init__(self, poller: Poller, security: TransportSecurity,
                 ssl_context: ssl.SSLContext | None, *, server_side: bool, timeout: float,
                 send_buffer_size: int, recv_buffer_size: int,
                 keepalive: tuple[int, int, int] | None, sock: socket.socket | None = None,
                 peer: str = "?") -> None:
        self.peer = peer
        self.peer_id: str | None = None
        self._poller = poller
        self._security = security
        self._ssl_context = ssl_context
        self._server_side = server_side
        self._timeout = timeout
        self._send_buffer_size = send_buffer_size
        self._recv_buffer_size = recv_buffer_size
        self._keepalive = keepalive
        self._on_connected: Callable[[], None] | None = None
        self._on_message: Callable[[dict[str, Any]], None] | None = None
        self._on_disconnected: Callable[[], None] | None = None
        self._sock: socket.socket | None = None
        self._fd: int | None = None
        self._phase = _Phase.IDLE
        self._started = 0.0
        self._awaiting_since: float | None = None
        self._decoder = wire.FrameDecoder(security.max_frame_bytes)
        self._wbuf = bytearray()
        self._retry_size = 0
        self._want_write = False
        self._mask = 0
        self._nonce = b""
        self._cipher: tls.PskCipher | None = None
        self._generation = 0  # bumped on every disconnect, to notice one inside a callback
        if sock is not None:
            self._configure(sock)
            self._attach(sock)

    # -- TcpConnection-compatible surface used by TCPTransport --------------------------
    def setOnConnectedCallback(self, callback: Callable[[], None] | None) -> None:
        """Called once the channel is secured (outgoing and incoming connections)."""
        self._on_connected = callback

    def setOnMessageReceivedCallback(self, callback: Callable[[dict[str, Any]], None] | None
                                     ) -> None:
        """Called with every validated message."""
        self._on_message = callback

    def setOnDisconnectedCallback(self, callback: Callable[[], None] | None) -> None:
        """Called when an open or opening connection closes."""
        self._on_disconnected = callback

    @property
    def state(self) -> int:
        """PySyncObj ``CONNECTION_STATE``: CONNECTED only once secured."""
        return _CONNECTION_STATE[self._phase]

    def fileno(self) -> int | None:
        """The socket's file descriptor, or None when closed."""
        return self._fd

    def connect(self, host: str, port: int) -> bool:
        """Start a non-blocking connect; False if it failed at once."""
        if host is None:
            return False
        self.disconnect()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._configure(sock)  # buffer sizes must be set before connecting
            sock.connect((host, port))
        except BlockingIOError:
            pass
        except OSError as exc:
            logger.debug("connect to %s failed: %s", self.peer, exc)
            sock.close()
            return False
        self._attach(sock)
        return True

    def start(self) -> None:
        """Begin securing an accepted connection (once its callbacks are set)."""
        if self._phase is _Phase.CONNECTING:
            self._begin_security()
            self._resubscribe()

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message; dropped (and logged) if the connection is not open or it is
        larger than the frame limit. Raises :class:`wire.WireError` for an invalid message."""
        if self._phase is not _Phase.OPEN:
            return
        body = wire.encode_message(message)
        overhead = tls.PskCipher.OVERHEAD if self._cipher is not None else 0
        if len(body) + overhead > self._security.max_frame_bytes:
            logger.error("dropping %s message of %d bytes to %s: larger than max_frame_bytes=%d",
                         message.get("type"), len(body), self.peer,
                         self._security.max_frame_bytes)
            return
        if self._cipher is not None:
            body = self._cipher.seal(body)
        self._queue(wire.encode_frame(body, self._security.max_frame_bytes))

    def disconnect(self) -> None:
        """Close the socket; fires the disconnected callback if it was open or opening."""
        was_active = self._phase is not _Phase.IDLE
        self._generation += 1
        if self._fd is not None:
            self._poller.unsubscribe(self._fd)
        if self._sock is not None:
            self._sock.close()
        self._sock = self._fd = None
        self._phase = _Phase.IDLE
        self.peer_id = None
        self._cipher = None
        self._wbuf = bytearray()
        self._decoder = wire.FrameDecoder(self._security.max_frame_bytes)
        self._retry_size = self._mask = 0
        self._want_write = False
        self._awaiting_since = None
        if was_active and self._on_disconnected is not None:
            self._on_disconnected()

    # -- hastate additions ------------------------------------------------------------------
    def age(self, now: float) -> float:
        """Seconds since this connection was started (0 when closed)."""
        return now - self._started if self._phase is not _Phase.IDLE else 0.0

    def check_timeout(self, now: float) -> None:
        """Close the connection if its handshake or its peer's answer is overdue."""
        if self._phase in (_Phase.CONNECTING, _Phase.TLS_HANDSHAKE, _Phase.PSK_HANDSHAKE):
            if now - self._started > self._timeout:
                # A slow TCP connect is a down node; a stalled handshake is suspicious.
                self._close(f"not connected and secured within {self._timeout:.1f}s",
                            refused=self._phase is not _Phase.CONNECTING)
        elif self._phase is _Phase.OPEN and self._awaiting_since is not None \
                and now - self._awaiting_since > self._timeout:
            self._close(f"no data for {self._timeout:.1f}s after sending")

    def refuse(self, reason: str, quiet: bool = False) -> None:
        """Close the connection as a security or protocol refusal (a warning unless quiet)."""
        self._close(reason, refused=not quiet)

    # -- internals -----------------------------------------------------------------------------
    def _configure(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer_size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer_size)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._keepalive is not None:
            set_keepalive(sock, *self._keepalive)

    def _attach(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._phase = _Phase.CONNECTING
        self._started = time.monotonic()
        if not self._server_side:
            self._resubscribe()  # wait for the connect to finish (writable)

    def _close(self, reason: str, refused: bool = False) -> None:
        if refused:
            level = logging.WARNING
        elif self._phase is _Phase.CONNECTING:  # a reconnect attempt to a down node
            level = logging.DEBUG
        else:
            level = logging.INFO
        logger.log(level, "closing Raft connection with %s (node id %s, %s): %s",
                   self.peer, self.peer_id, self._phase.value, reason)
        self.disconnect()

    def _begin_security(self) -> None:
        mode = self._security.mode
        if mode == "tls":
            assert self._ssl_context is not None and self._sock is not None
            try:
                self._sock = self._ssl_context.wrap_socket(
                    self._sock, server_side=self._server_side, do_handshake_on_connect=False)
            except (OSError, ssl.SSLError) as exc:
                self._close(f"TLS setup failed: {exc}", refused=True)
                return
            self._phase = _Phase.TLS_HANDSHAKE
            self._tls_handshake()
        elif mode == "psk":
            self._nonce = os.urandom(tls.PSK_NONCE_BYTES)
            self._phase = _Phase.PSK_HANDSHAKE
            self._queue(wire.encode_frame(self._nonce))
        else:
            self._open()

    def _tls_handshake(self) -> None:
        assert isinstance(self._sock, ssl.SSLSocket)
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLWantWriteError:
            self._want_write = True
            return
        except (ssl.SSLError, OSError) as exc:
            self._close(f"TLS handshake failed: {exc}", refused=True)
            return
        self.peer_id = tls.peer_node_id(self._sock.getpeercert())
        if self.peer_id is None:
            self._close("certificate does not name exactly one hastate node id", refused=True)
            return
        self._open()

    def _open(self) -> None:
        self._phase = _Phase.OPEN
        self._awaiting_since = None
        if self._on_connected is not None:
            self._on_connected()

    def _resubscribe(self) -> None:
        if self._fd is None:
            return
        mask = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
        if self._phase is _Phase.CONNECTING or self._want_write or self._wbuf:
            mask |= POLL_EVENT_TYPE.WRITE
        if mask != self._mask:
            self._poller.subscribe(self._fd, self._on_event, mask)
            self._mask = mask

    def _on_event(self, fd: int, events: int) -> None:
        if fd != self._fd:  # a stale registration of a socket closed since
            self._poller.unsubscribe(fd)
            return
        if events & POLL_EVENT_TYPE.ERROR:
            self._close("socket error or hang-up")
            return
        self._want_write = False
        generation = self._generation
        if self._phase is _Phase.CONNECTING:
            assert self._sock is not None
            error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._close(f"connect failed: {os.strerror(error)}")
                return
            self._begin_security()
        elif self._phase is _Phase.TLS_HANDSHAKE:
            self._tls_handshake()
        if self._phase in (_Phase.PSK_HANDSHAKE, _Phase.OPEN):
            self._flush()
            if self._generation == generation:
                self._receive()
        if self._generation == generation:
            self._resubscribe()

    def _queue(self, frame: bytes) -> None:
        self._wbuf += frame
        if self._awaiting_since is None:
            self._awaiting_since = time.monotonic()
        self._flush()
        self._resubscribe()

    def _flush(self) -> None:
        while self._wbuf and self._sock is not None:
            # After a WANT_* OpenSSL must be retried with the same bytes: keep the size.
            size = self._retry_size or min(len(self._wbuf), _WRITE_CHUNK)
            try:
                with memoryview(self._wbuf) as view, view[:size] as chunk:
                    sent = self._sock.send(chunk)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError,
                    InterruptedError):
                self._retry_size = size
                return
            except OSError as exc:
                self._close(f"send failed: {exc}")
                return
            self._retry_size = 0
            del self._wbuf[:sent]

    def _receive(self) -> None:
        generation = self._generation
        while self._generation == generation and self._sock is not None:
            try:
                data = self._sock.recv(self._recv_buffer_size)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                return
            except ssl.SSLWantWriteError:
                self._want_write = True
                return
            except ssl.SSLError as exc:  # e.g. the peer's TLS stack refused our certificate
                self._close(f"TLS error: {exc}", refused=True)
                return
            except OSError as exc:
                self._close(f"receive failed: {exc}")
                return
            if not data:
                self._close("closed by peer")
                return
            self._awaiting_since = None
            try:
                bodies = self._decoder.feed(data)
            except wire.WireError as exc:
                self._close(str(exc), refused=True)
                return
            for body in bodies:
                self._handle_body(body)
                if self._generation != generation:  # closed (maybe reopened) by a callback
                    return

    def _handle_body(self, body: bytes) -> None:
        if self._phase is _Phase.PSK_HANDSHAKE:
            if len(body) != tls.PSK_NONCE_BYTES:
                self._close("malformed PSK handshake", refused=True)
                return
            client_nonce, server_nonce = ((body, self._nonce) if self._server_side
                                          else (self._nonce, body))
            assert self._security.psk is not None
            self._cipher = tls.PskCipher(self._security.psk, client_nonce, server_nonce,
                                         is_client=not self._server_side)
            self._open()
            return
        try:
            if self._cipher is not None:
                body = self._cipher.open(body)
            message = wire.decode_message(body)
        except InvalidTag:
            self._close("frame failed PSK authentication (wrong key, tampered or replayed)",
                        refused=True)
            return
        except wire.WireError as exc:
            self._close(str(exc), refused=True)
            return
        if self._on_message is not None:
            self._on_message(message)


class SecureServer:
    """The listening socket, on PySyncObj's poller; hands accepted sockets to ``on_accept``."""

    def __init__(self, poller: Poller, host: str, port: int,
                 on_accept: Callable[[socket.socket, str], None]) -> None:
        self._poller = poller
        self._host = host
        self._port = port
        self._on_accept = on_accept
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        """Bind and listen; raises OSError (PySyncObj retries every ``bindRetryTime``)."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind((self._host, self._port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._poller.subscribe(sock.fileno(), self._on_event,
                               POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)
        logger.info("Raft transport listening on %s:%d", self._host, self._port)

    def unbind(self) -> None:
        """Stop listening."""
        if self._sock is not None:
            self._poller.unsubscribe(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_event(self, fd: int, events: int) -> None:
        if events & POLL_EVENT_TYPE.ERROR:
            logger.error("Raft listening socket %s:%d failed; no longer accepting",
                         self._host, self._port)
            self.unbind()
            return
        while self._sock is not None:
            try:
                sock, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("accepting a Raft connection failed: %s", exc)
                return
            self._on_accept(sock, f"{address[0]}:{address[1]}")


# -- transport ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Binding:
    security: TransportSecurity
    on_extension_message: ExtensionHandler | None


class SecureTransport(TCPTransport):
    """PySyncObj ``TCPTransport`` over :class:`SecureConnection`; see the module docstring.

    Built by SyncObj as ``transportClass(syncObj, selfNode, otherNodes)``; the class must come
    from :func:`make_transport_class`, which binds the security settings. After the SyncObj is
    constructed, ``transport_class.instance`` is the transport (for :meth:`send_extension`).
    """

    _binding: ClassVar[_Binding | None] = None
    instance: ClassVar["SecureTransport | None"] = None

    def __init__(self, syncObj: Any, selfNode: TCPNode | None,
                 otherNodes: Iterable[TCPNode]) -> None:
        binding = type(self)._binding
        if binding is None:
            raise ConfigError("SecureTransport needs its security settings: pass "
                              "transportClass=make_transport_class(security)")
        if type(self).instance is not None:
            raise ConfigError("this transport class already serves a SyncObj; call "
                              "make_transport_class once per SyncObj")
        conf = syncObj.conf
        if conf.password:
            raise ConfigError("PySyncObj's password encryption cannot be combined with "
                              "SecureTransport; use TransportSecurity(mode='psk') or 'tls'",
                              field="password")
        if selfNode is None:
            raise ConfigError("read-only PySyncObj nodes are not supported by SecureTransport")
        security = binding.security
        others = list(otherNodes)
        addresses = [selfNode.address, *(node.address for node in others)]
        check_transport_mode(security.mode,
                             addresses + ([conf.bindAddress] if conf.bindAddress else []))
        self._security = security
        self._on_extension = binding.on_extension_message
        self._server_ctx: ssl.SSLContext | None = None
        self._client_ctx: ssl.SSLContext | None = None
        self._member_ids: frozenset[str] = frozenset()
        # Raft address -> node id; grows when a membership change adds a node.
        self._node_ids: dict[str, str] = dict(security.node_ids)
        if security.mode == "tls":
            own_id = self._node_id(selfNode.address)
            self._member_ids = frozenset(self._node_id(node.address) for node in others)
            ca, cert, key = security.ca, security.cert, security.key
            assert ca and cert and key  # TransportSecurity refuses tls without them
            cert_ids = tls.certificate_node_ids(cert)
            if cert_ids != [own_id]:
                raise ConfigError(f"certificate {cert} names node ids {cert_ids}, but "
                                  f"this node ({selfNode.address}) is {own_id!r}",
                                  field="transport.cert")
            self._server_ctx = tls.server_context(ca, cert, key)
            self._client_ctx = tls.client_context(ca, cert, key)
        # PySyncObj unpickles installed snapshots unless a custom deserializer is set.
        self._snapshots_accepted = bool(conf.fullDumpFile) and conf.deserializer is not None
        self._outgoing_transmissions: dict[TCPNode, bytearray] = {}
        self._non_member_warned: dict[str, float] = {}
        self._tick_thread: int | None = None
        self._foreign_sends: collections.deque[tuple[Any, dict[str, Any]]] = \
            collections.deque()
        self._wakeup = PipeNotifier(syncObj._poller, self._send_foreign)
        super().__init__(syncObj, selfNode, others)
        type(self).instance = self

    # -- public API ------------------------------------------------------------------------------
    def send(self, node: Any, message: dict[str, Any]) -> bool:
        """Send a message to a node; False if it is not connected (any thread, see module)."""
        if self._tick_thread is not None and threading.get_ident() != self._tick_thread:
            self._foreign_sends.append((node, message))
            try:
                self._wakeup.notify()
            except BlockingIOError:
                pass  # the pipe is full: a wake-up is already pending
            return self._is_connected(node)
        if message.get("transmission") is not None:
            collapsed = self._collapse_transmission(node, message)
            if collapsed is None:
                return self._is_connected(node)
            message = collapsed
        return super().send(node, message)

    def send_extension(self, address: str, message: dict[str, Any]) -> bool:
        """Send a ``hastate_*`` message to the node at ``address`` (any thread).

        Returns False when that node is not connected (the message is dropped: hastate's
        messages are periodic or retried by their sender). Raises :class:`wire.WireError`
        for a message that breaks its schema, ValueError for a non-extension type or an
        unknown address.
        """
        if not wire.is_extension(str(message.get("type", ""))):
            raise ValueError(f"not a hastate extension message: {message.get('type')!r}")
        wire.validate_message(message)  # even when not connected, so bugs show at once
        node = self._nodeAddrToNode.get(address)
        if node is None:
            raise ValueError(f"{address!r} is not a node of this cluster")
        return self.send(node, message)

    def setOnUtilityMessageCallback(self, message: str, callback: Any) -> None:
        """Ignored: PySyncObj's in-band admin commands are never served on this transport
        (hastate's admin API is HTTP with a token)."""
        logger.debug("in-band admin command %r disabled on the Raft transport", message)

    # -- PySyncObj hooks ------------------------------------------------------------------------
    def _createServer(self) -> None:
        conf = self._syncObj.conf
        host, port = (conf.bindAddress or self._selfNode.address).rsplit(":", 1)
        if conf.bindAddress is None and self._security.mode != "plaintext":
            host = "::" if ":" in host else "0.0.0.0"  # PySyncObj's default: every interface
        if host not in _WILDCARD_HOSTS:
            host = globalDnsResolver().resolve(host.strip("[]"))
        self._server = SecureServer(self._syncObj._poller, host, int(port),
                                    self._onNewIncomingSocket)

    def _onTick(self) -> None:
        self._tick_thread = threading.get_ident()
        super()._onTick()
        now = time.monotonic()
        timeout = self._syncObj.conf.connectionTimeout
        for conn in list(self._unknownConnections):
            if conn.age(now) > timeout:
                conn.refuse(f"no valid hello within {timeout:.1f}s")
        for conn in [*self._connections.values(), *self._unknownConnections]:
            conn.check_timeout(now)

    def register_member(self, address: str, node_id: str) -> None:
        """Learn the node id of a Raft address before a membership change adds it (tick thread)."""
        tls.check_node_id(node_id)
        self._node_ids[address] = node_id

    def addNode(self, node: TCPNode) -> None:
        if self._security.mode == "tls":
            self._member_ids = self._member_ids | {self._node_id(node.address)}
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            conn = self._new_connection(node.address, server_side=False)
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def dropNode(self, node: TCPNode) -> None:
        if self._security.mode == "tls":
            self._member_ids = self._member_ids - {self._node_ids.get(node.address)}
        super().dropNode(node)

    def _node_id(self, address: str) -> str:
        try:
            return self._node_ids[address]
        except KeyError:
            raise ConfigError(f"no node id configured for Raft address {address!r}",
                              field="transport.node_ids") from None

    def _sendSelfAddress(self, conn: SecureConnection) -> None:
        conn.send({"type": "hello", "address": self._selfNode.address})

    def _onOutgoingConnected(self, conn: SecureConnection) -> None:
        node = self._connToNode(conn)
        if node is None:  # dropped while connecting
            conn.disconnect()
            return
        if self._security.mode == "tls":
            expected = self._node_id(node.address)
            if conn.peer_id != expected:
                conn.refuse(f"{node.address} must present node id {expected!r}, "
                            f"its certificate says {conn.peer_id!r}")
                return
        self._sendSelfAddress(conn)
        self._onNodeConnected(node)

    def _onIncomingMessageReceived(self, conn: SecureConnection, message: dict[str, Any]
                                   ) -> None:
        if message["type"] != "hello":
            conn.refuse(f"first message must be hello, got {message['type']}")
            return
        address = message["address"]
        node = self._nodeAddrToNode.get(address)
        if node is None:
            self._refuse_non_member(conn, address)
            return
        if self._security.mode == "tls" and conn.peer_id != self._node_id(address):
            conn.refuse(f"certificate for {conn.peer_id!r} cannot speak as {address} "
                        f"(node {self._node_id(address)!r})")
            return
        if self._shouldConnect(node):
            conn.refuse(f"{address} must wait for this node to connect to it "
                        "(do both nodes list the same addresses?)")
            return
        self._unknownConnections.discard(conn)
        previous = self._connections.get(node)
        if previous is not None and previous is not conn:
            previous.disconnect()  # the node reconnected: its old connection is stale
        self._connections[node] = conn
        conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        logger.info("Raft connection from %s (%s) accepted", address, conn.peer_id or "no id")
        self._onNodeConnected(node)

    def _onMessageReceived(self, node: TCPNode, message: dict[str, Any]) -> None:
        message_type = message["type"]
        if message_type == "hello":
            self._refuse_node(node, "hello on an established connection")
        elif wire.is_extension(message_type):
            self._dispatch_extension(node, message)
        elif message.get("serialized") is not None and not self._snapshots_accepted:
            self._refuse_node(node, "snapshot install refused: this node has no non-pickle "
                                    "snapshot deserializer (set conf.fullDumpFile and "
                                    "conf.serializer/deserializer)")
        else:
            super()._onMessageReceived(node, message)

    # -- internals ---------------------------------------------------------------------------
    def _new_connection(self, peer: str, *, server_side: bool,
                        sock: socket.socket | None = None) -> SecureConnection:
        conf = self._syncObj.conf
        return SecureConnection(
            self._syncObj._poller, self._security,
            self._server_ctx if server_side else self._client_ctx,
            server_side=server_side, timeout=conf.connectionTimeout,
            send_buffer_size=conf.sendBufferSize, recv_buffer_size=conf.recvBufferSize,
            keepalive=conf.tcp_keepalive, sock=sock, peer=peer)

    def _onNewIncomingSocket(self, sock: socket.socket, peer: str) -> None:
        if len(self._unknownConnections) >= MAX_PENDING_CONNECTIONS:
            logger.warning("refusing Raft connection from %s: %d connections already pending",
                           peer, MAX_PENDING_CONNECTIONS)
            sock.close()
            return
        conn = self._new_connection(peer, server_side=True, sock=sock)
        self._unknownConnections.add(conn)
        conn.setOnConnectedCallback(functools.partial(self._onIncomingSecured, conn))
        conn.setOnMessageReceivedCallback(
            functools.partial(self._onIncomingMessageReceived, conn))
        conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
        conn.start()

    def _onIncomingSecured(self, conn: SecureConnection) -> None:
        if self._security.mode == "tls" and conn.peer_id not in self._member_ids:
            conn.refuse(f"certificate for node id {conn.peer_id!r} is not a cluster member")

    def _refuse_non_member(self, conn: SecureConnection, address: str) -> None:
        """Refuse a node outside the configuration; warn once a minute per address.

        A removed node that still runs, or a joining one not added yet, retries every
        connection retry period: one warning says so, the repeats go to debug.
        """
        now = time.monotonic()
        if len(self._non_member_warned) > 1024:
            self._non_member_warned.clear()
        if now - self._non_member_warned.get(address, float("-inf")) > 60.0:
            self._non_member_warned[address] = now
            logger.warning("refusing Raft connections from %s: not in this node's "
                           "configuration (a removed node still running, or a joining node "
                           "not added yet; see `hastate members`)", address)
        conn.refuse(f"claims unknown address {address}", quiet=True)

    def _refuse_node(self, node: TCPNode, reason: str) -> None:
        conn = self._connections.get(node)
        if conn is not None:
            conn.refuse(reason)

    def _dispatch_extension(self, node: TCPNode, message: dict[str, Any]) -> None:
        if self._on_extension is None:
            super()._onMessageReceived(node, message)
            return
        try:
            self._on_extension(node, message)
        except Exception:  # a handler bug must not kill the Raft tick thread
            logger.exception("extension handler failed on %s from %s", message["type"],
                             node.address)

    def _collapse_transmission(self, node: Any, message: dict[str, Any]
                               ) -> dict[str, Any] | None:
        """Turn PySyncObj's chunked transfer of one large entry into one ``entries`` message.

        PySyncObj sends a large entry as pickled chunks that the receiver unpickles; those
        must not cross the wire. The chunks come from this node's own log and arrive in one
        burst, so they are gathered here and the entry re-sent as ``entries=[entry]``.
        PySyncObj may label a chunk before the last one ``finish`` (it compares positions
        with the command's length, not the pickle's), so an incomplete pickle at ``finish``
        waits for the next chunk.
        """
        if message["transmission"] == "start":
            self._outgoing_transmissions[node] = bytearray()
        buffer = self._outgoing_transmissions.get(node)
        if buffer is None:  # a chunk without its start: the transfer was interrupted
            return None
        buffer += message["data"]
        if len(buffer) > self._security.max_frame_bytes:
            logger.error("entry for %s exceeds max_frame_bytes=%d; it cannot be replicated",
                         node, self._security.max_frame_bytes)
            del self._outgoing_transmissions[node]
            return None
        if message["transmission"] != "finish":
            return None
        try:
            wire.check_pickle(bytes(buffer))
            entry = pysyncobj.pickle.loads(bytes(buffer))  # our own log entry, checked above
        except Exception:
            logger.debug("entry for %s incomplete after %d bytes; waiting for the next chunk",
                         node, len(buffer))
            return None
        del self._outgoing_transmissions[node]
        collapsed = {key: value for key, value in message.items()
                     if key not in ("transmission", "data")}
        collapsed["entries"] = [tuple(entry)]
        return collapsed

    def _is_connected(self, node: Any) -> bool:
        conn = self._connections.get(node)
        return conn is not None and conn.state == CONNECTION_STATE.CONNECTED

    def _send_foreign(self) -> None:
        """Tick thread: send what other threads queued."""
        while self._foreign_sends:
            node, message = self._foreign_sends.popleft()
            self.send(node, message)


def make_transport_class(security: TransportSecurity,
                         on_extension_message: ExtensionHandler | None = None
                         ) -> type[SecureTransport]:
    """A :class:`SecureTransport` subclass bound to ``security``, for one SyncObj.

    ``on_extension_message(node, message)``, if given, receives every validated ``hastate_*``
    message on the tick thread; without it they reach SyncObj's message callback (where
    ``HastateSyncObj._SyncObj__onMessageReceived`` handles them). Usage::

        transport_class = make_transport_class(security, on_extension_message=handler)
        syncobj = SyncObj(self_addr, others, conf, consumers, transportClass=transport_class)
        transport_class.instance.send_extension(addr, {"type": "hastate_lease_ping", ...})
    """
    class BoundSecureTransport(SecureTransport):
        _binding = _Binding(security, on_extension_message)
        instance = None

    BoundSecureTransport.__name__ = BoundSecureTransport.__qualname__ = \
        f"SecureTransport[{security.mode}]"
    return BoundSecureTransport
