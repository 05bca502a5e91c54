"""``SecureTransport``: PySyncObj's ``TCPTransport`` with hastate's connections and identity checks.

It keeps PySyncObj's bookkeeping (who dials whom, reconnects, node add/drop) and replaces
what touches the network; see the package docstring for what it guarantees.
"""

from __future__ import annotations

import collections
import functools
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import pysyncobj.pickle
from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from hastate.consensus import tls, wire
from hastate.addresses import check_transport_mode
from hastate.consensus.transport.config import TransportSecurity
from hastate.consensus.transport.connection import SecureConnection
from hastate.consensus.transport.server import SecureServer
from hastate.errors import ConfigError

logger = logging.getLogger(__name__)

#: Incoming connections allowed to be mid-handshake (or awaiting ``hello``) at once.
MAX_PENDING_CONNECTIONS = 64
_WILDCARD_HOSTS = ("0.0.0.0", "::")

#: Called on the tick thread with the sending node and a validated ``hastate_*`` message.
ExtensionHandler = Callable[[TCPNode, dict[str, Any]], None]


@dataclass(frozen=True)
class _Binding:
    security: TransportSecurity
    on_extension_message: ExtensionHandler | None


class SecureTransport(TCPTransport):
    """PySyncObj ``TCPTransport`` over :class:`SecureConnection`; see the package docstring.

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
