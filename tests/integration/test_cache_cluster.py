"""The read-through cache across three nodes: 20 concurrent readers (the test process and two
bot processes, each embedding a node) call the loader once per key per expiry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from hastate.testing import wait_for

pytestmark = pytest.mark.integration

TTL = 5.0

BOT = """
import json, pathlib, sys, threading, time
from hastate import StateManager
config, me, work = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
sm = StateManager.from_config(config, me)
sm.start(wait_ready=60)

def loader(key):
    with open(work / "loads.log", "a") as log:
        log.write(me + " " + key + "\\n")
    time.sleep(0.3)
    return key + "@" + me + "@" + str(time.time())

caches = [sm.cache("ticker", ttl=float(sys.argv[4]), loader=loader) for _ in range(7)]
(work / (me + ".ready")).write_text("")
for rnd in (1, 2):
    while not (work / ("round%d" % rnd)).exists():
        time.sleep(0.01)
    while sm.get_state("local", keys=["cache/ticker/BTC"]) and rnd == 2:
        time.sleep(0.01)                  # this replica has applied the expiry
    results = [None] * 7
    def read(i):
        results[i] = caches[i].get("BTC")
    threads = [threading.Thread(target=read, args=(i,)) for i in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = work / ("%s.round%d.json" % (me, rnd))
    out.with_suffix(".tmp").write_text(json.dumps(results))
    out.with_suffix(".tmp").rename(out)
while True:
    time.sleep(1)
"""


def test_twenty_readers_on_three_nodes_load_once_per_key_per_expiry(cluster, tmp_path) -> None:
    sm = cluster.sm
    work = tmp_path / "cache"
    work.mkdir()
    loads = work / "loads.log"
    bots = []
    for node in ("instance-2", "instance-3"):
        cluster.kill(node, signal.SIGTERM)           # the bot embeds this node instead
        log = open(tmp_path / f"{node}.bot.log", "wb")
        bots.append(subprocess.Popen([sys.executable, "-c", BOT, str(cluster.config_path), node,
                                      str(work), str(TTL)], stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True))
        log.close()

    def loader(key: str) -> str:
        with open(loads, "a") as out:
            out.write(f"instance-1 {key}\n")
        time.sleep(0.3)
        return f"{key}@instance-1@{time.time()}"

    caches = [sm.cache("ticker", ttl=TTL, loader=loader) for _ in range(6)]
    try:
        for node in ("instance-2", "instance-3"):
            wait_for((work / f"{node}.ready").exists, timeout=60, what=f"{node} bot")
        seen: dict[int, list[str]] = {}
        for rnd in (1, 2):
            if rnd == 2:
                wait_for(lambda: not sm.get_state("local", keys=["cache/ticker/BTC"]),
                         timeout=3 * TTL, what="the cached value's expiry")
            local: list[str] = []
            threads = [threading.Thread(target=lambda c=c: local.append(c.get("BTC")))
                       for c in caches]
            (work / f"round{rnd}").write_text("")
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            for node in ("instance-2", "instance-3"):
                out = work / f"{node}.round{rnd}.json"
                wait_for(out.exists, timeout=60, what=f"{node} round {rnd}")
                local += json.loads(out.read_text())
            assert len(local) == 20
            seen[rnd] = local
            assert len(set(local)) == 1, f"round {rnd}: readers saw {set(local)}"
            assert len(loads.read_text().splitlines()) == rnd   # one load per expiry
        assert seen[1][0] != seen[2][0]
    finally:
        for cache in caches:
            cache.close()
        for bot in bots:
            if bot.poll() is None:
                bot.kill()
                bot.wait(10)
