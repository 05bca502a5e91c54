"""The Raft transport: PySyncObj's TCP transport without pickle, with TLS or PSK, and bounded.

Defect 7: PySyncObj 0.3.17's ``TCPTransport`` unpickles every frame it receives, trusts the
address a peer claims, buffers announced frames of any size and answers admin commands
('status', 'add', 'remove', 'transfer') on the Raft port. ``SecureTransport`` keeps its connection
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

Threading: connections are only touched by the SyncObj tick thread.
:meth:`SecureTransport.send` (which PySyncObj's ``transferLeadership`` calls from the
caller's thread) and :meth:`SecureTransport.send_extension` may be called from any thread:
a call from another thread is queued and the tick thread is woken through a pipe to send it.

Modules: ``config`` (:class:`TransportSecurity`), ``connection`` (the
connection state machine), ``server`` (the listening socket), ``secure`` (the transport
itself and :func:`make_transport_class`).
"""

from hastate.consensus.transport.config import Mode, TransportSecurity
from hastate.consensus.transport.connection import SecureConnection
from hastate.consensus.transport.secure import (MAX_PENDING_CONNECTIONS, ExtensionHandler,
                                                SecureTransport, make_transport_class)
from hastate.consensus.transport.server import SecureServer

__all__ = ["MAX_PENDING_CONNECTIONS", "ExtensionHandler", "Mode", "SecureConnection",
           "SecureServer", "SecureTransport", "TransportSecurity", "make_transport_class"]
