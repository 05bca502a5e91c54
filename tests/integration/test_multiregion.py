"""Three nodes with the "multi-region" profile behind ~100 ms RTT links (tests/chaos/proxy.py).

Checks the profile's promises: under continuous writes for 15 s (five of the profile's
longest election timeouts) there is no election at all (heartbeats and lease pings survive the RTT), and when the leader dies a new one holds
the lease within the profile's documented ``failover_bound``.

Wiring the proxy into PySyncObj: between two nodes only the one with the larger address
dials, and the dialled node recognises the caller by the address the caller claims (its own
bind address). So each node gets its own cluster file: a peer with a *smaller* address is
listed at the proxy link that forwards to it (this node dials through the delay), a peer
with a larger address at its real address (that peer dials us, through its own link). Nodes
bind 127.0.0.2-4 and the proxy listens on 127.0.0.1, so every link address sorts below every
node address and exactly one side of each pair dials.

Takes ~20 s (15 s of it the write window; HASTATE_MULTIREGION_WINDOW changes it).

About the bound: ``failover_bound`` covers one election. With two survivors a split vote
is possible (both election timers fire within one link delay of each other, ~6% of leader
deaths at 50 ms one-way); the next election round then adds up to ``max_timeout``. The test
tells the cases apart by the term: one election (term + 1) must meet the bound, a split vote
(term + 2 or more) must meet bound + ``max_timeout``.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from hastate.consensus.profiles import get_profile
from hastate.errors import WriteError
from hastate.testing import wait_for
from hastate.testing.cluster import REGIONS, free_port
from hastate.testing.embedded import EmbeddedCluster

pytestmark = pytest.mark.integration

LINK_DELAY_MS = 50          # each direction: ~100 ms round trip per link
WRITE_WINDOW_S = float(os.environ.get("HASTATE_MULTIREGION_WINDOW", "15"))
PROFILE = get_profile("multi-region")


class ProxiedCluster(EmbeddedCluster):
    """EmbeddedCluster whose nodes reach each other through TcpProxy links with a delay."""

    def __init__(self, workdir: Path, proxy) -> None:
        super().__init__(workdir, 3, name="multiregion", profile="multi-region")
        self.proxy = proxy
        self.raft = {n: f"127.0.0.{i + 2}:{free_port()}" for i, n in enumerate(self.ids)}
        taken = {int(a.rsplit(":", 1)[1]) for a in (*self.raft.values(), *self.http.values())}
        links: dict[tuple[str, str], str] = {}
        for a in self.ids:
            for b in self.ids:
                if self.raft[a] > self.raft[b]:           # a dials b, through a link
                    host, port = self.raft[b].rsplit(":", 1)
                    listen = free_port()
                    while listen in taken:                # not a port a node will bind
                        listen = free_port()
                    taken.add(listen)
                    proxy.add_link(f"{a}->{b}", int(port), target_host=host,
                                   listen_port=listen, delay_ms=LINK_DELAY_MS)
                    links[(a, b)] = f"127.0.0.1:{listen}"
        self.configs: dict[str, Path] = {}
        for me in self.ids:
            lines = ["[cluster]", 'name = "multiregion"', 'profile = "multi-region"',
                     'admin_token_env = "HASTATE_ADMIN_TOKEN"', ""]
            for n, node_id in enumerate(self.ids):
                raft = links.get((me, node_id), self.raft[node_id])
                lines += ["[[nodes]]", f'id = "{node_id}"', f'region = "{REGIONS[n]}"',
                          f'raft = "{raft}"', f'http = "{self.http[node_id]}"',
                          f'data_dir = "{self.workdir / "data" / node_id}"', ""]
            self.configs[me] = self.workdir / f"cluster-{me}.toml"
            self.configs[me].write_text("\n".join(lines))
        self.config_path = self.configs["instance-1"]   # for the CLI: same ids and http

    def config_for(self, node_id: str) -> Path:
        return self.configs[node_id]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[ProxiedCluster]:
    from chaos.proxy import TcpProxy   # tests/ is on sys.path (its conftest.py is there)

    with TcpProxy() as proxy:
        with ProxiedCluster(tmp_path, proxy).running(timeout=30) as cluster:
            yield cluster


def test_multi_region_profile_holds_leader_under_100ms_rtt_and_fails_over_in_bound(
        proxied: ProxiedCluster) -> None:
    sm = proxied.sm
    # The dying leader must be a process (the writer lives in instance-1): move it first.
    if proxied.wait_leader(timeout=30) == "instance-1":
        sm.trigger_failover("instance-2", timeout=30)
    leader = proxied.wait_leader(timeout=30)
    assert leader != "instance-1"
    before = {n: proxied.status(n) for n in proxied.ids}
    terms = {st["term"] for st in before.values()}
    assert len(terms) == 1, before

    latencies: list[float] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                sm.save_state({"seq": i}, timeout=15)
                latencies.append(time.monotonic() - started)
            except WriteError as exc:
                errors.append(exc)
            i += 1

    thread = threading.Thread(target=writer, name="multiregion-writer")
    thread.start()
    try:
        leaders_seen = set()
        end = time.monotonic() + WRITE_WINDOW_S
        while time.monotonic() < end:
            leaders_seen.add(proxied.leader())
            time.sleep(0.25)
        after = {n: proxied.status(n) for n in proxied.ids}
        # No election during the window: same term and leader everywhere, no new changes.
        assert errors == []
        assert leaders_seen == {leader}
        for node_id in proxied.ids:
            assert after[node_id]["term"] == before[node_id]["term"], node_id
            assert after[node_id]["leader_changes"] == before[node_id]["leader_changes"]
        # The links really delay: a follower's write needs leader round trips.
        assert len(latencies) > 20
        assert statistics.median(latencies) >= 0.09, statistics.median(latencies)

        # Unplanned failover: kill the leader; a survivor must hold the lease within bound.
        survivors = [n for n in proxied.ids if n != leader]
        killed_at = time.monotonic()
        proxied.kill(leader, signal.SIGKILL)
        new_leader = wait_for(lambda: proxied.leader(survivors), timeout=3 * PROFILE.failover_bound,
                              interval=0.01, what="new leader")
        took = time.monotonic() - killed_at
        elections = proxied.status(new_leader)["term"] - before[leader]["term"]
        print(f"failover took {took:.2f}s with {elections} election(s) (bound "
              f"{PROFILE.failover_bound:.2f}s); write latency median "
              f"{statistics.median(latencies) * 1000:.0f} ms over {len(latencies)} writes")
        bound = PROFILE.failover_bound if elections == 1 else \
            PROFILE.failover_bound + PROFILE.max_timeout      # split vote: one more round
        assert took <= bound, (took, elections, bound)
        count = len(latencies)
        wait_for(lambda: len(latencies) > count + 5, timeout=15, what="writes on the new leader")
    finally:
        stop.set()
        thread.join(30)
    assert new_leader in survivors
    assert errors == []   # writes were retried across the failover, none failed
