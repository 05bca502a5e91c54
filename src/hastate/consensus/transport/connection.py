"""The connection state machine: one Raft connection, secured by TLS or a PSK, on the poller.

Phases: idle -> connecting -> (tls-handshake | psk-handshake) -> open; any protocol
violation or timeout closes it (back to idle). See :class:`SecureConnection`.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import ssl
import time
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from pysyncobj.poller import POLL_EVENT_TYPE, Poller
from pysyncobj.tcp_connection import CONNECTION_STATE, set_keepalive

from hastate.consensus import tls, wire
from hastate.consensus.transport.config import TransportSecurity
from hastate.consensus.transport.write_queue import WriteQueue

logger = logging.getLogger(__name__)

#: Largest slice handed to one ``send`` call (bounds the copy TLS makes per record batch).
_WRITE_CHUNK = 256 * 1024
#: Largest slice handed to one ``sendmsg`` on a plain socket (no copy: views of the frames).
_SENDMSG_CHUNK = 1024 * 1024



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
        self._wbuf = WriteQueue()
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
        self._wbuf = WriteQueue()
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
        self._wbuf.append(frame)
        if self._awaiting_since is None:
            self._awaiting_since = time.monotonic()
        self._flush()
        self._resubscribe()

    def _flush(self) -> None:
        while self._wbuf and self._sock is not None:
            # After a WANT_* OpenSSL must be retried with the same bytes: keep the size.
            size = self._retry_size or min(len(self._wbuf), _WRITE_CHUNK)
            try:
                if isinstance(self._sock, ssl.SSLSocket):
                    sent = self._sock.send(self._wbuf.peek(size))
                else:
                    sent = self._sock.sendmsg(self._wbuf.slices(_SENDMSG_CHUNK))
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError,
                    InterruptedError):
                self._retry_size = size
                return
            except OSError as exc:
                self._close(f"send failed: {exc}")
                return
            self._retry_size = 0
            self._wbuf.consume(sent)

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
