"""An in-memory Raft transport with partition and drop hooks, for tests (never for production).

Like hashicorp/raft's ``inmem_transport.go``: every node of one :class:`MemoryNetwork` lives
in this process; ``send`` encodes the message with :mod:`hastate.consensus.wire` (so it is
copied and checked against the same schema as on TCP) and puts it in the receiver's inbox,
and a pipe in the receiver's poller wakes its tick thread, which delivers it to SyncObj.
Connection events (PySyncObj's "node connected/disconnected") follow the network's links:

* :meth:`MemoryNetwork.partition` cuts every link between two groups of nodes (both sides
  see the other disconnect; messages in neither direction pass);
* :meth:`MemoryNetwork.drop` silently discards the messages a predicate selects (links stay
  up, as with a lossy network or a filtering proxy);
* :meth:`MemoryNetwork.heal` restores every link and removes every drop rule.

Usage: ``SyncObj(..., transportClass=network.transport_class())``, one call per node.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable, ClassVar, Iterable

from pysyncobj.node import Node
from pysyncobj.transport import Transport

from hastate.consensus import wire
from hastate.consensus.waker import PollWaker

logger = logging.getLogger(__name__)

#: ``drop`` predicate: (sender address, receiver address, message) -> True to discard it.
DropRule = Callable[[str, str, dict[str, Any]], bool]


class MemoryNetwork:
    """The links between in-memory transports: who can reach whom, and what gets lost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._endpoints: dict[str, MemoryTransport] = {}
        self._cut: set[frozenset[str]] = set()
        self._drops: list[DropRule] = []
        self.delivered = 0
        self.dropped = 0

    def transport_class(self) -> type["MemoryTransport"]:
        """A transport class bound to this network, for one SyncObj's ``transportClass``."""
        class BoundMemoryTransport(MemoryTransport):
            network = self
        return BoundMemoryTransport

    # -- faults -------------------------------------------------------------------------------
    def partition(self, side: Iterable[str], other: Iterable[str] | None = None) -> None:
        """Cut every link between the addresses in ``side`` and those in ``other``.

        Without ``other``: between ``side`` and every other node on the network.
        """
        side = set(side)
        with self._lock:
            others = set(other) if other is not None else set(self._endpoints) - side
            pairs = {frozenset((a, b)) for a in side for b in others if a != b}
            newly = pairs - self._cut
            self._cut |= pairs
            events = self._link_events(newly, up=False)
        self._post(events)

    def heal(self) -> None:
        """Restore every link and forget every drop rule."""
        with self._lock:
            healed, self._cut = self._cut, set()
            self._drops = []
            events = self._link_events(healed, up=True)
        self._post(events)

    def drop(self, rule: DropRule) -> Callable[[], None]:
        """Discard every message ``rule(src, dst, message)`` selects; returns the undo."""
        with self._lock:
            self._drops = [*self._drops, rule]

        def undo() -> None:
            with self._lock:
                self._drops = [r for r in self._drops if r is not rule]
        return undo

    def linked(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` are both on the network and not partitioned."""
        with self._lock:
            return self._linked(a, b)

    # -- transports ---------------------------------------------------------------------------
    def _linked(self, a: str, b: str) -> bool:
        return a in self._endpoints and b in self._endpoints and frozenset((a, b)) not in self._cut

    def _link_events(self, pairs: Iterable[frozenset[str]], *, up: bool
                     ) -> list[tuple["MemoryTransport", tuple[str, str]]]:
        """Lock held: the connect/disconnect events a change of ``pairs`` causes."""
        kind = "up" if up else "down"
        events = []
        for pair in pairs:
            a, b = sorted(pair)
            if a in self._endpoints and b in self._endpoints:
                events.append((self._endpoints[a], (kind, b)))
                events.append((self._endpoints[b], (kind, a)))
        return events

    @staticmethod
    def _post(events: list[tuple["MemoryTransport", tuple[str, Any]]]) -> None:
        for endpoint, event in events:
            endpoint._post(event)

    def _join(self, endpoint: "MemoryTransport") -> None:
        address = endpoint.address
        with self._lock:
            if address in self._endpoints:
                raise ValueError(f"{address!r} is already on this memory network")
            self._endpoints[address] = endpoint
            events = self._link_events({frozenset((address, other)) for other in self._endpoints
                                        if other != address and
                                        frozenset((address, other)) not in self._cut}, up=True)
        self._post(events)

    def _leave(self, endpoint: "MemoryTransport") -> None:
        address = endpoint.address
        with self._lock:
            if self._endpoints.get(address) is not endpoint:
                return
            events = self._link_events({frozenset((address, other)) for other in self._endpoints
                                        if other != address and
                                        frozenset((address, other)) not in self._cut}, up=False)
            del self._endpoints[address]
        self._post(events)

    def _send(self, src: str, dst: str, message: dict[str, Any]) -> bool:
        body = wire.encode_message(message)  # a copy, checked like a TCP frame
        with self._lock:
            if not self._linked(src, dst):
                return False
            receiver = self._endpoints[dst]
            drops = self._drops
        lost = any(rule(src, dst, message) for rule in drops)  # user code: outside the lock
        with self._lock:
            if lost:
                self.dropped += 1
            else:
                self.delivered += 1
        if not lost:
            receiver._post(("message", src, body))
        return True  # a lost message looks sent: the sender cannot tell


class MemoryTransport(Transport):
    """PySyncObj ``Transport`` over a :class:`MemoryNetwork`; build it with ``transport_class``."""

    network: ClassVar[MemoryNetwork | None] = None

    def __init__(self, syncObj: Any, selfNode: Node | None, otherNodes: Iterable[Node]) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        network = type(self).network
        if network is None or selfNode is None:
            raise ValueError("use MemoryNetwork.transport_class() for a voting node")
        self._network = network
        self.address: str = selfNode.id
        self._nodes: dict[str, Node] = {node.id: node for node in otherNodes}
        self._connected: set[str] = set()
        self._inbox: collections.deque[tuple[Any, ...]] = collections.deque()
        self._waker = PollWaker(syncObj._poller, self._deliver)
        network._join(self)

    # -- PySyncObj's Transport interface --------------------------------------------------------
    def send(self, node: Node, message: dict[str, Any]) -> bool:
        """Deliver ``message`` to ``node`` unless the link is cut; any thread."""
        return self._network._send(self.address, node.id, message)

    def addNode(self, node: Node) -> None:
        self._nodes[node.id] = node
        if self._network.linked(self.address, node.id):
            self._post(("up", node.id))

    def dropNode(self, node: Node) -> None:
        self._nodes.pop(node.id, None)
        self._connected.discard(node.id)

    def destroy(self) -> None:
        self._network._leave(self)
        self._waker.close()

    # -- delivery on the tick thread ------------------------------------------------------------
    def _post(self, item: tuple[Any, ...]) -> None:
        """Any thread: queue ``item`` and wake the tick thread."""
        self._inbox.append(item)
        self._waker.wake()

    def _deliver(self) -> None:
        """Tick thread: hand every queued item to PySyncObj."""
        while self._inbox:
            kind, peer, *rest = self._inbox.popleft()
            node = self._nodes.get(peer)
            if node is None:
                continue  # not (or no longer) a member: refused, as the TCP transport does
            if kind == "message":
                self._onMessageReceived(node, wire.decode_message(rest[0]))
            elif kind == "up" and peer not in self._connected:
                self._connected.add(peer)
                self._onNodeConnected(node)
            elif kind == "down" and peer in self._connected:
                self._connected.discard(peer)
                self._onNodeDisconnected(node)
