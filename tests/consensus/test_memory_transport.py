"""MemoryNetwork links: delivery through the receiver's poller, partitions, drops, heal."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from pysyncobj.node import TCPNode
from pysyncobj.poller import createPoller

from hastate.consensus.transport.memory import MemoryNetwork, MemoryTransport
from hastate.consensus.wire import WireError

A, B, C = "a.memory:1", "b.memory:1", "c.memory:1"


class Endpoint:
    """One transport with its own poller, recording what SyncObj would be told."""

    def __init__(self, network: MemoryNetwork, address: str, peers: list[str]) -> None:
        self.poller = createPoller("auto")
        self.events: list[tuple[str, str, Any]] = []
        self.transport: MemoryTransport = network.transport_class()(
            SimpleNamespace(_poller=self.poller), TCPNode(address), [TCPNode(p) for p in peers])
        self.transport.setOnMessageReceivedCallback(
            lambda node, message: self.events.append(("message", node.id, message)))
        self.transport.setOnNodeConnectedCallback(
            lambda node: self.events.append(("up", node.id, None)))
        self.transport.setOnNodeDisconnectedCallback(
            lambda node: self.events.append(("down", node.id, None)))

    def take(self) -> list[tuple[str, str, Any]]:
        """Run this node's poll (its tick) and return what was delivered."""
        self.poller.poll(0)
        events, self.events = self.events, []
        return events


@pytest.fixture
def net() -> Iterator[tuple[MemoryNetwork, dict[str, Endpoint]]]:
    network = MemoryNetwork()
    nodes = {address: Endpoint(network, address, [p for p in (A, B, C) if p != address])
             for address in (A, B, C)}
    yield network, nodes
    for endpoint in nodes.values():
        endpoint.transport.destroy()


def ping(term: int) -> dict[str, Any]:
    return {"type": "hastate_lease_ping", "term": term, "sent": 1.0}


def test_nodes_connect_and_messages_arrive_in_order_as_copies(net) -> None:
    network, nodes = net
    assert sorted(e[1] for e in nodes[A].take() if e[0] == "up") == [B, C]
    nodes[B].take()
    message = ping(1)
    for term in (1, 2, 3):
        assert nodes[A].transport.send(TCPNode(B), ping(term))
    got = nodes[B].take()
    assert [m["term"] for kind, src, m in got if kind == "message" and src == A] == [1, 2, 3]
    assert got[0][2] is not message and network.delivered == 3


def test_a_partition_disconnects_both_sides_and_loses_messages(net) -> None:
    network, nodes = net
    for endpoint in nodes.values():
        endpoint.take()
    network.partition([A])
    assert sorted(nodes[A].take()) == [("down", B, None), ("down", C, None)]
    assert nodes[B].take() == [("down", A, None)]
    assert not nodes[A].transport.send(TCPNode(B), ping(1))
    assert not nodes[B].transport.send(TCPNode(A), ping(1))
    assert nodes[B].transport.send(TCPNode(C), ping(1))     # the majority side still talks
    assert nodes[B].take() == [] and nodes[A].take() == []
    assert [e[0] for e in nodes[C].take()] == ["down", "message"]
    network.heal()
    assert sorted(nodes[A].take()) == [("up", B, None), ("up", C, None)]
    assert nodes[A].transport.send(TCPNode(B), ping(2))
    assert [e[0] for e in nodes[B].take()] == ["up", "message"]


def test_drop_loses_selected_messages_silently_and_undo_stops_it(net) -> None:
    network, nodes = net
    nodes[B].take()
    undo = network.drop(lambda src, dst, m: dst == B and m["term"] == 2)
    for term in (1, 2, 3):
        assert nodes[A].transport.send(TCPNode(B), ping(term))  # the sender cannot tell
    assert [m["term"] for kind, _src, m in nodes[B].take() if kind == "message"] == [1, 3]
    assert network.dropped == 1
    undo()
    nodes[A].transport.send(TCPNode(B), ping(2))
    assert [m["term"] for kind, _src, m in nodes[B].take() if kind == "message"] == [2]


def test_messages_are_checked_against_the_wire_schema(net) -> None:
    _network, nodes = net
    with pytest.raises(WireError):
        nodes[A].transport.send(TCPNode(B), {"type": "hastate_lease_ping", "term": "x"})


def test_a_destroyed_node_leaves_the_network(net) -> None:
    network, nodes = net
    nodes[B].take()
    nodes[A].transport.destroy()
    assert ("down", A, None) in nodes[B].take()
    assert not network.linked(A, B)
    assert not nodes[B].transport.send(TCPNode(A), ping(1))
