"""The API the node code uses: make_transport_class, instance, send_extension, threads."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.node import TCPNode

from hastate.consensus.transport import (SecureTransport, TransportSecurity,
                                         make_transport_class)
from hastate.consensus.wire import WireError
from hastate.errors import ConfigError

from .conftest import FAST_CONF, loopback_addresses

PING = {"type": "hastate_lease_ping", "term": 1, "sent": 1.0}


def _node(transport_class: type, addresses: list[str], index: int = 0, **conf: Any
          ) -> SyncObj:
    others = [a for a in addresses if a != addresses[index]]
    return SyncObj(addresses[index], others, SyncObjConf(**{"autoTick": False, **conf}),
                   transportClass=transport_class)


def test_transport_class_serves_one_syncobj_and_exposes_it() -> None:
    transport_class = make_transport_class(TransportSecurity(mode="plaintext"))
    addresses = loopback_addresses(2)
    node = _node(transport_class, addresses)
    try:
        assert isinstance(transport_class.instance, SecureTransport)
        with pytest.raises(ConfigError, match="once per SyncObj"):
            _node(transport_class, addresses)
    finally:
        node._doDestroy()
    with pytest.raises(ConfigError, match="make_transport_class"):
        _node(SecureTransport, addresses)


def test_send_extension_checks_type_address_and_schema() -> None:
    transport_class = make_transport_class(TransportSecurity(mode="plaintext"))
    addresses = loopback_addresses(2)
    node = _node(transport_class, addresses)
    transport = transport_class.instance
    assert transport is not None
    try:
        assert transport.send_extension(addresses[1], PING) is False  # not connected
        with pytest.raises(ValueError, match="not a hastate extension"):
            transport.send_extension(addresses[1], {"type": "timeout_now", "term": 1})
        with pytest.raises(ValueError, match="not a node of this cluster"):
            transport.send_extension("127.0.0.1:1", PING)
        with pytest.raises(WireError, match="sent"):  # checked even when not connected
            transport.send_extension(addresses[1], {**PING, "sent": "now"})
    finally:
        node._doDestroy()


class _Catcher(SyncObj):
    """Like HastateSyncObj: takes hastate_* messages in SyncObj's own message callback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.got: list[tuple[str, dict[str, Any], str]] = []
        self.arrived = threading.Event()
        super().__init__(*args, **kwargs)

    def _SyncObj__onMessageReceived(self, node: TCPNode, message: dict[str, Any]) -> None:
        if message["type"].startswith("hastate_"):
            self.got.append((node.address, message, threading.current_thread().name))
            self.arrived.set()
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)


def test_hastate_messages_from_another_thread_reach_syncobj_without_a_handler() -> None:
    """Without on_extension_message, hastate_* messages go to SyncObj's callback; a send
    from a foreign thread is queued and made by the tick thread."""
    addresses = loopback_addresses(2)
    sender_class = make_transport_class(TransportSecurity(mode="plaintext"))
    receiver_class = make_transport_class(TransportSecurity(mode="plaintext"))
    sender = _node(sender_class, addresses, 0, autoTick=True, **FAST_CONF)
    receiver = _Catcher(addresses[1], addresses[:1],
                        SyncObjConf(autoTick=True, **FAST_CONF), transportClass=receiver_class)
    try:
        sender.waitBinded()
        receiver.waitBinded()
        transport = sender_class.instance
        assert transport is not None
        # Sent again until it arrives: a message sent on a connection that is then replaced
        # (the dialling side retries after its connect timeout on a busy machine) is lost,
        # as PySyncObj's transport allows; hastate's lease pings repeat for the same reason.
        deadline = time.monotonic() + 10
        while not receiver.arrived.wait(0.05):
            assert time.monotonic() < deadline, "the ping never arrived"
            transport.send_extension(addresses[1], PING)
        assert receiver.got[0][:2] == (addresses[0], PING)
        assert receiver.got[0][2] != threading.current_thread().name
    finally:
        sender.destroy()
        receiver.destroy()
