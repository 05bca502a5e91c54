"""The short fault tier on Firestore: three bot processes write while the leading one is
paused past its lease (SIGSTOP) and another is killed (SIGKILL).

Checks: the engines' leader-lease intervals (``HASTATE_LEASE_TRACE``, on the machine-wide
monotonic clock) never overlap between two instances (0 ms), with a negative control on the
same trace; every write a bot saw acknowledged is in the store afterwards; the key each bot
holds under a kept-alive lease survives the leader changes for the bot never disturbed,
and vanishes for the killed one (its lease expired by whoever leads then).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from consensus.test_lease_sigstop import leader_intervals, overlaps

from hastate.engines.firestore.leadership import LeaseDoc
from hastate.engines.firestore.settings import parse
from hastate.engines.firestore.store import Store
from hastate.state.codec import decode_value
from hastate.testing import wait_for
from hastate.testing.firestore import FirestoreEmulator, cluster_file
from hastate.testing.lease_trace import ENV as LEASE_TRACE_ENV

pytestmark = pytest.mark.integration

BOT = Path(__file__).with_name("firestore_bot_main.py")
IDS = ["bot-1", "bot-2", "bot-3"]
TTL = 2.0


class Bots:
    """Three bot processes, each in a session of its own, and a view of the lease."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config = cluster_file(workdir / "cluster.toml", name="faults", ids=IDS,
                                   lease_ttl=f"{TTL}s")
        self.trace = workdir / "lease-trace.jsonl"
        self.store = Store(parse({"project": "hastate-test"}, cluster="faults", path=None))
        env = dict(os.environ, **{LEASE_TRACE_ENV: str(self.trace)})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for i in IDS:
            with open(workdir / f"{i}.log", "ab") as log:
                self.procs[i] = subprocess.Popen(
                    [sys.executable, str(BOT), str(self.config), i, str(workdir / f"{i}.acks")],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def holder(self) -> str:
        return LeaseDoc.of(self.store.leader_ref.get()).holder

    def acks(self, instance: str) -> list[int]:
        path = self.workdir / f"{instance}.acks"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def signal(self, instance: str, sig: signal.Signals) -> None:
        self.procs[instance].send_signal(sig)

    def close(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


@pytest.fixture
def bots(emulator: FirestoreEmulator, tmp_path: Path) -> Iterator[Bots]:
    running = Bots(tmp_path)
    try:
        yield running
    finally:
        running.close()


def test_a_paused_leader_and_its_successor_never_both_act_and_no_acknowledged_write_is_lost(
        bots: Bots) -> None:
    wait_for(lambda: bots.holder() and all(len(bots.acks(i)) >= 2 for i in IDS), timeout=60,
             what="a leader and writes from every bot")
    paused = bots.holder()
    bots.signal(paused, signal.SIGSTOP)                 # frozen past its lease
    try:
        wait_for(lambda: bots.holder() not in ("", paused), timeout=30,
                 what="a successor while the leader is paused")
        time.sleep(TTL / 2)
    finally:
        bots.signal(paused, signal.SIGCONT)
    successor = bots.holder()
    time.sleep(TTL)                                     # the resumed bot sees it lost
    bots.signal(successor, signal.SIGKILL)
    wait_for(lambda: bots.holder() not in ("", successor), timeout=30,
             what="a leader after the kill")
    survivors = [i for i in IDS if i != successor]
    marks = {i: len(bots.acks(i)) for i in survivors}
    wait_for(lambda: all(len(bots.acks(i)) > marks[i] + 3 for i in survivors), timeout=30,
             what="the surviving bots writing again")
    held = lambda i: bots.store.state_ref(f"held/{i}").get().exists  # noqa: E731
    wait_for(lambda: not held(successor), timeout=45, what="the killed bot's lease expiring")
    undisturbed = next(i for i in IDS if i not in (paused, successor))
    assert held(undisturbed), "a lease kept alive by a running bot expired"
    bots.close()

    intervals = leader_intervals(bots.trace, "hastate", time.monotonic())
    assert {paused, successor} <= {node for node, _a, _b in intervals}, intervals
    assert overlaps(intervals) == [], "two bots could act as leader at once"
    # Negative control: the same checker flags the paused leader's interval before its
    # successor took over, had it lasted one second into the successor's.
    first = min((iv for iv in intervals if iv[0] == successor), key=lambda iv: iv[1])
    last = max((iv for iv in intervals if iv[0] == paused and iv[2] <= first[1]),
               key=lambda iv: iv[2])
    stretched = [iv if iv != last else (last[0], last[1], first[1] + 1.0) for iv in intervals]
    assert overlaps(stretched), "the overlap checker missed an injected overlap"

    stored = {snap.get("key"): decode_value(bytes(snap.get("value")))
              for snap in bots.store.state.stream()}
    acked = {f"w/{i}/{n}": n for i in IDS for n in bots.acks(i)}
    assert len(acked) > 10
    lost = {k: v for k, v in acked.items() if stored.get(k) != v}
    assert not lost, f"acknowledged writes missing from the store: {sorted(lost)[:10]}"
