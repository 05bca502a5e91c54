"""Leases and TTL keys against real node processes: expiry through the log, seen alike on
every node's watch, never before the TTL, also when the leader is killed mid-TTL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from hastate.consensus.node import DUMP
from hastate.errors import LeaseNotFoundError
from hastate.state.dump import decode_dump
from hastate.state.housekeeping import DEFAULT_LEASE_INTERVAL
from hastate.testing import wait_for
from hastate.testing.sse import SSE

pytestmark = pytest.mark.integration

#: Scheduling slack on a loaded 2-core machine, on top of one lease-check interval.
SLACK = 3.0


Delete = tuple[float, str, int]    # (arrival time on this process's monotonic clock, key, revision)


def local_deletes(watcher, count: int, timeout: float = 30.0) -> list[Delete]:
    """The next ``count`` delete events of an in-process watcher."""
    out: list[Delete] = []
    while len(out) < count:
        event = watcher.get(timeout=timeout)
        assert event is not None, f"no delete event within {timeout}s (got {out})"
        if event.type == "delete":
            out.append((time.monotonic(), event.key, event.revision))
    return out


def stream_deletes(stream: SSE, count: int, timeout: float = 30.0) -> list[Delete]:
    """The first ``count`` delete events of an SSE stream."""
    def found() -> list[Delete]:
        return [(stream.received[i], e["key"], e["revision"])
                for i, e in enumerate(list(stream.events)) if e["event"] == "delete"]
    wait_for(lambda: len(found()) >= count, timeout=timeout, what="delete events")
    return found()[:count]


def test_ttl_keys_expire_at_one_revision_on_every_nodes_watch_never_early(cluster) -> None:
    sm = cluster.sm
    start = sm.revision() + 1
    local = sm.watch("ttl/", start)
    streams = [SSE(cluster, node, f"prefix=ttl/&start_revision={start}")
               for node in ("instance-2", "instance-3")]
    try:
        ttl = 2.0
        sent = time.monotonic()
        sm.save_state({"ttl/a": 1, "ttl/b": 2}, ttl=ttl)
        sm.save_state({"ttl/keep": 3})
        seen = [local_deletes(local, 2)]
        seen += [stream_deletes(stream, 2) for stream in streams]
        revisions = set()
        for deletes in seen:
            assert sorted(key for _, key, _ in deletes) == ["ttl/a", "ttl/b"]
            revisions |= {revision for _, _, revision in deletes}
            for at, _, _ in deletes:
                assert at >= sent + ttl, "a TTL key disappeared before its TTL"
                assert at <= sent + ttl + DEFAULT_LEASE_INTERVAL + SLACK
        assert len(revisions) == 1                      # one revision, the same everywhere
        assert sm.get_state() == {"ttl/keep": 3} and sm.leases() == {}
    finally:
        for stream in streams:
            stream.close()


def test_killing_the_leader_mid_ttl_restarts_the_countdown_never_expires_early(cluster) -> None:
    sm = cluster.sm
    cluster.make_leader("instance-2")
    start = sm.revision() + 1
    local = sm.watch("mid/", start)
    ttl = 4.0
    sent = time.monotonic()
    lease = sm.grant_lease(ttl)
    sm.save_state({"mid/order": "in-flight"}, lease=lease)
    stream = SSE(cluster, "instance-3", f"prefix=mid/&start_revision={start}")
    try:
        time.sleep(ttl / 2)
        killed = time.monotonic()
        cluster.kill("instance-2", signal.SIGKILL)
        ((at, key, revision),) = local_deletes(local, 1)
        assert key == "mid/order" and at >= sent + ttl
        # The new leader counts from when it took over, after the kill.
        assert at >= killed + ttl
        assert stream_deletes(stream, 1)[0][1:] == (key, revision)
        assert stream_deletes(stream, 1)[0][0] >= killed + ttl
        with pytest.raises(LeaseNotFoundError):
            lease.keep_alive()
        assert lease.time_to_live() == 0.0
    finally:
        stream.close()


BOT = """
import pathlib, sys, time
from hastate import StateManager
sm = StateManager.from_config(sys.argv[1], sys.argv[2])
sm.start(wait_ready=30)
me = sm.presence(ttl=2.0, model_version="v1.2.3")
inflight = sm.grant_lease(2.0)
sm.save_state({"inflight/" + sys.argv[2]: "order-7"}, lease=inflight)
inflight.keep_alive_in_background()
out = pathlib.Path(sys.argv[3])
out.with_suffix(".tmp").write_text(str(me.lease.id))
out.with_suffix(".tmp").rename(out)
while True:
    time.sleep(1)
"""


def test_a_killed_bots_presence_and_inflight_marker_disappear_after_their_ttl(
        cluster, tmp_path) -> None:
    cluster.kill("instance-2", signal.SIGTERM)        # the bot embeds instance-2 instead
    out = tmp_path / "bot.ready"
    log = open(tmp_path / "bot.log", "wb")
    bot = subprocess.Popen([sys.executable, "-c", BOT, str(cluster.config_path),
                            "instance-2", str(out)], stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    log.close()
    sm = cluster.sm
    try:
        wait_for(out.exists, timeout=60, what="the bot's presence")
        wait_for(lambda: "instance-2" in sm.members_alive(), timeout=10)
        entry = sm.members_alive()["instance-2"]
        assert entry == {"instance": "instance-2", "region": entry["region"],
                         "model_version": "v1.2.3", "healthy": True}
        start = sm.revision() + 1
        watcher = sm.watch("", start)
        time.sleep(3 * 2.0)                           # kept alive well past its TTL
        assert "instance-2" in sm.members_alive("linearizable")
        assert sm.get_state(keys=["inflight/instance-2"]) == {"inflight/instance-2": "order-7"}
        bot.kill()
        bot.wait(10)
        killed = time.monotonic()
        deletes = local_deletes(watcher, 2, timeout=60)
        assert sorted(key for _, key, _ in deletes) == ["inflight/instance-2",
                                                        "presence/instance-2"]
        assert all(at >= killed for at, _, _ in deletes)
        assert sm.members_alive() == {}
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait(10)


def test_lease_table_survives_a_restart_of_every_node_via_dump_and_journal(cluster) -> None:
    sm = cluster.sm
    lease = sm.grant_lease(60)
    sm.save_state({"keep/a": 1}, lease=lease)
    sm.node.call_soon(sm.node.syncobj.forceLogCompaction)      # the table goes into the dump
    wait_for(lambda: sm.node.syncobj.compactions_total >= 1)
    _, body = decode_dump((cluster.workdir / "data" / "instance-1" / DUMP).read_bytes(),
                          source="dump", cluster="itest")
    assert body["state"]["leases"] == [[lease.id, 60.0, lease.id, ["keep/a"]]]
    later = sm.grant_lease(60)                                  # only in the journal tail
    sm.save_state({"keep/b": 2}, lease=later)
    before = sm.leases()
    digest = sm.machine.state_hash()
    wait_for(lambda: all((cluster.state(n, "local") or {}).get("state_hash") == digest
                         for n in ("instance-2", "instance-3")))
    cluster.stop_all()
    sm.stop()
    sm = cluster.start_embedded(http=False)
    cluster.start("instance-2")
    cluster.start("instance-3")
    sm.wait_ready(20)
    sm.get_state()                                              # caught up through the leader
    assert sm.leases() == before and sm.machine.state_hash() == digest
    lease.manager = later.manager = sm                          # the same bot, reconnected
    assert lease.keep_alive() > 0
    assert later.revoke() is True and sm.get_state() == {"keep/a": 1}
