"""A paused leader never makes a lease's keys disappear early: real node processes, the
leader SIGSTOPped past the TTL while the bot keeps its lease alive through the new leader;
every delete seen on two nodes' watches passes the no-early-expiry checker."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from hastate.errors import HAStateError
from hastate.testing import wait_for
from hastate.testing.embedded import EmbeddedCluster
from hastate.testing.sse import SSE

from .lease_checker import LeaseHistory, check_no_early_expiry

pytestmark = pytest.mark.integration

TTL = 3.0


def test_leader_paused_past_the_ttl_expires_nothing_early(tmp_path: Path) -> None:
    with EmbeddedCluster(tmp_path, 3, name="leasepause").running(http=False) as cluster:
        sm = cluster.sm
        cluster.make_leader("instance-2")
        start = sm.revision() + 1
        local: list[tuple[str, str, float]] = []        # recorded as they arrive
        sm.watch("p/", start, callback=lambda event: local.append(
            ("instance-1", event.key, time.monotonic())) if event.type == "delete" else None)
        stream = SSE(cluster, "instance-3", f"prefix=p/&start_revision={start}")
        sent = time.monotonic()
        lease = sm.grant_lease(TTL)
        history = LeaseHistory(TTL, [sent])
        sm.save_state({"p/x": 1, "p/y": 2}, lease=lease)
        stop = threading.Event()

        def keep() -> None:
            while not stop.wait(0.3):
                sent = time.monotonic()
                try:
                    lease.keep_alive(timeout=2.0)
                except HAStateError:
                    continue                    # no leader during the election: try again
                history.refreshes.append(sent)

        keeper = threading.Thread(target=keep, daemon=True)
        keeper.start()
        try:
            time.sleep(1.0)
            cluster.procs["instance-2"].send_signal(signal.SIGSTOP)
            time.sleep(2 * TTL)                 # paused well past the TTL
            cluster.procs["instance-2"].send_signal(signal.SIGCONT)
            time.sleep(1.5)
            stopped = time.monotonic()
        finally:
            stop.set()
            keeper.join(10)
            cluster.resume_all()
        try:
            wait_for(lambda: len(local) == 2, timeout=30, what="instance-1's deletes")
            history.deletes += local
            wait_for(lambda: sum(e["event"] == "delete" for e in stream.events) == 2,
                     timeout=30, what="instance-3's deletes")
            history.deletes += [("instance-3", e["key"], stream.received[i])
                                for i, e in enumerate(stream.events) if e["event"] == "delete"]
        finally:
            stream.close()
        result = check_no_early_expiry({lease.id: history})
        assert result.ok, result.summary()
        assert result.deletes_checked == 4
        assert all(seen >= stopped for _, _, seen in history.deletes)   # kept alive until then
        assert len(history.refreshes) > 10
