"""A write whose answer is lost on the wire is retried and applied exactly once.

A real TCP proxy sits between the bot and etcd; it holds every chunk 500 ms each way while
the bot's request timeout is 800 ms, so etcd applies the first attempt but its answer never
arrives in time. Retries go through the same slow proxy (the bot knows no other endpoint)
until it is fast again; the first retry that gets an answer finds the write's marker.
"""

from __future__ import annotations

import threading
import time

from chaos.proxy import TcpProxy

from hastate.engines.etcd import commands
from hastate.engines.etcd.client import EtcdClient, b64
from hastate.engines.etcd.keys import Layout
from hastate.engines.etcd.settings import parse
from hastate.state import txn
from hastate.state.codec import Command, encode_value
from hastate.testing import wait_for

from .conftest import Bots


def test_a_lost_answer_is_retried_and_applied_once(bots: Bots) -> None:
    with TcpProxy() as proxy:
        proxy.add_link("etcd", bots.store.client_ports[0])
        config = bots.config("exactly-once", [f"http://127.0.0.1:{proxy.port('etcd')}"],
                             request_timeout=0.8, discover_members=False)
        sm = bots.start(config, "instance-1")
        wait_for(sm.ready, timeout=20)
        sm.save_state({"warm": 1})
        proxy.configure("etcd", delay_ms=500)
        outcome: list = []
        writer = threading.Thread(target=lambda: outcome.append(sm.transaction(
            [txn.version("n") == 0], [txn.put("n", 1)], [txn.get("n")])))
        writer.start()
        wait_for(lambda: bots.store.call(1, "/v3/kv/range", {
            "key": b64("/hastate/exactly-once/kv/n")}).get("kvs"), timeout=10,
            what="the first attempt applied in etcd")
        time.sleep(1.0)                       # its answer and a retry's are lost on the way
        proxy.configure("etcd", delay_ms=0)
        writer.join(20)
        assert outcome and outcome[0].succeeded          # the original answer, rebuilt
        assert sm.engine.replays_total >= 1 and sm.engine.retries_total >= 1
        assert sm.get_state(keys=["n"]) == {"n": 1}
        assert sm.records(["n"])["n"][3] == 1            # version 1: applied once


def test_the_marker_is_what_stops_the_second_apply(bots: Bots) -> None:
    """Negative control: the same write under a fresh marker applies again."""
    settings = parse({"endpoints": bots.store.endpoints}, cluster="marker-control")
    client, layout = EtcdClient(settings), Layout(settings.prefix)
    write = Command(op="update", values={"k": encode_value("k", 1)})

    def send(seq: int) -> dict:
        plan = commands.plan(write, layout, layout.dedup(b"\x01", seq), 0, lambda _k: None)
        return client.call("/v3/kv/txn", plan.body)
    try:
        assert send(1)["succeeded"] and not send(1).get("succeeded")   # the retry finds it
        assert send(2)["succeeded"]                                     # a new marker: again
        kvs = client.call("/v3/kv/range", {"key": b64("/hastate/marker-control/kv/k")})
        assert kvs["kvs"][0]["version"] == "2"
    finally:
        client.close()
