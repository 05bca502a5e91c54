"""A paused etcd member (the endpoint a bot reads its watch from) does not freeze the bot:
writes move to another member and the bot's mirror reopens its stream elsewhere."""

from __future__ import annotations

from hastate.testing import wait_for

from .conftest import Bots


def test_a_paused_member_stalls_neither_writes_nor_the_mirror(bots: Bots) -> None:
    config = bots.config("stall", request_timeout=1.0)
    reader, writer = bots.start(config, "instance-1"), bots.start(config, "instance-2")
    first = writer.save_state({"k": "before"})
    wait_for(lambda: reader.get_state("local", keys=["k"]) == {"k": "before"}, timeout=10)
    bots.store.pause_member(0)
    try:
        revision = writer.save_state({"k": "during"})
        assert revision > first
        wait_for(lambda: reader.get_state("local", keys=["k"]) == {"k": "during"}, timeout=20,
                 what="the reader's mirror to move past the paused member")
        assert reader.records(["k"])["k"][1] == revision
    finally:
        bots.store.pause_member(0, paused=False)
