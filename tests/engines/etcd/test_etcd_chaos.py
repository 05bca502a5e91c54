"""Longer fault campaigns on the etcd engine (``-m chaos``): the short tier's faults, repeated.

* Each etcd member in turn is killed and restarted under writes, reads and compare-and-sets
  from three bots: durability and linearizability hold.
* Whoever leads is cut off from etcd by a silent partition, round after round, with a writer
  running: the sampled is_leader() intervals of the bots never overlap.
"""

from __future__ import annotations

import threading
import time

import pytest
from chaos.checkers import check_durability, check_lease_overlap
from chaos.history import History
from chaos.linearizability import check_history
from chaos.proxy import Mode, TcpProxy

from hastate.testing import wait_for
from hastate.testing.etcd import write_cluster_file

from . import test_etcd_faults as faults
from .conftest import Bots

pytestmark = pytest.mark.chaos
ROUNDS = 6


def test_members_killed_in_turn_lose_nothing(bots: Bots) -> None:
    config = bots.config("chaos-kill")
    managers = {i: bots.start(config, i) for i in faults.IDS}
    history, stop = History(), threading.Event()
    threads = [threading.Thread(target=faults.client_loop, args=(sm, i, history, stop))
               for i, sm in managers.items()]
    for t in threads:
        t.start()
    try:
        for n in range(ROUNDS):
            bots.store.kill_member(n % 3)
            time.sleep(2.0)
            bots.store.start_member(n % 3)
            bots.store.wait_healthy(n % 3)
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    final = managers["instance-1"].get_state(keys=faults.KEYS)
    ops = history.operations()
    durability = check_durability(ops, final)
    assert durability.ok, durability.summary()
    linear = check_history(ops)
    assert linear.valid, linear.summary()


def test_leaders_cut_off_in_turn_never_overlap(bots: Bots) -> None:
    with TcpProxy() as proxy:
        managers = {}
        for n, instance in enumerate(faults.IDS):
            proxy.add_link(instance, bots.store.client_ports[n])
            config = write_cluster_file(
                bots.workdir / f"{instance}.toml",
                [f"http://127.0.0.1:{proxy.port(instance)}"], name="chaos-cut",
                discover_members=False, request_timeout=0.5)
            managers[instance] = bots.start(config, instance)
        samples: dict[str, list[list[float]]] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=faults.sampled_leadership,
                                   args=(managers, stop, samples))
        sampler.start()
        try:
            for _ in range(ROUNDS):
                leader = wait_for(lambda: next((i for i, sm in managers.items()
                                                if sm.is_leader()), None),
                                  timeout=30, what="a leader")
                proxy.configure(leader, mode=Mode.BLACKHOLE)
                wait_for(lambda: any(sm.is_leader() for i, sm in managers.items()
                                     if i != leader), timeout=30, what="a successor")
                time.sleep(0.5)
                proxy.configure(leader, mode=Mode.PASS)
                time.sleep(1.0)
        finally:
            stop.set()
            sampler.join(10)
    assert len([s for spans in samples.values() for s in spans]) >= ROUNDS
    result = check_lease_overlap({n: [tuple(s) for s in v] for n, v in samples.items()})
    assert result.ok, result.summary()
