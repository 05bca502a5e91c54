"""Lease handles, TTL keys, presence and the read-through cache on a real single-node cluster."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.errors import ConfigError, LeaseNotFoundError
from hastate.recipes.cache import Cache
from hastate.recipes.lease import Lease
from hastate.state.txn import missing, put
from hastate.testing import free_port, wait_for


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[StateManager]:
    manager = StateManager("solo", {"solo": f"127.0.0.1:{free_port()}"},
                           data_dir=tmp_path / "solo", cluster_name="leases", serve_http=False,
                           region="asia-northeast1")
    manager.start(wait_ready=10)
    try:
        yield manager
    finally:
        manager.stop()


def gone(sm: StateManager, key: str) -> bool:
    return key not in sm.get_state("local")


def test_ttl_shorthand_expires_the_keys_and_a_plain_put_detaches(sm) -> None:
    sent = time.monotonic()
    sm.save_state({"a": 1, "b": 2}, ttl=0.5)
    sm.save_state({"b": 3})                                 # detached: lives on
    wait_for(lambda: gone(sm, "a"), timeout=10)
    assert time.monotonic() >= sent + 0.5
    assert sm.get_state() == {"b": 3} and sm.leases() == {}
    wait_for(lambda: sm.engine.lease_expirer.expired_total == 1, timeout=10)


def test_keeper_keeps_keys_past_their_ttl_until_the_health_check_fails(sm) -> None:
    healthy = threading.Event()
    healthy.set()
    lease = sm.grant_lease(0.6)
    sm.save_state({"inflight/x": "order"}, lease=lease)
    lost: list = []
    lease.keep_alive_in_background(interval=0.1, health=healthy.is_set, on_lost=lost.append)
    time.sleep(1.5)
    assert sm.get_state() == {"inflight/x": "order"} and lease.alive
    healthy.clear()                                          # the bot's health check dies
    wait_for(lambda: gone(sm, "inflight/x"), timeout=10)
    assert lease.time_to_live() == 0.0
    with pytest.raises(LeaseNotFoundError):
        lease.keep_alive()
    with pytest.raises(LeaseNotFoundError):                 # nothing written with it any more
        sm.save_state({"late": 1}, lease=lease)
    assert gone(sm, "late")


def test_revoke_deletes_at_once_and_transactions_attach_keys(sm) -> None:
    lease = sm.grant_lease(60)
    assert 59 < lease.time_to_live() <= 60
    result = sm.transaction([missing("job")], [put("job", "me", lease=lease), put("free", 1)])
    assert result.succeeded and sm.machine.lease_of("job") == lease.id
    assert sm.leases()[lease.id].keys == frozenset({"job"})
    watcher = sm.watch("", sm.revision() + 1)
    assert lease.revoke() is True and lease.revoke() is False
    event = watcher.get(timeout=5)
    assert (event.type, event.key) == ("delete", "job")
    assert sm.get_state() == {"free": 1}


def test_bad_lease_arguments_are_refused_before_proposing(sm) -> None:
    for ttl in (0, -1, float("nan"), "soon"):
        with pytest.raises(ConfigError, match="ttl"):
            sm.grant_lease(ttl)
    with pytest.raises(ValueError, match="ttl"):
        Lease.grant(sm, 0)
    with pytest.raises(ValueError, match="lease"):
        put("k", 1, lease=-3)
    with pytest.raises(ValueError, match="not both"):
        sm.save_state({"k": 1}, ttl=5, lease=1)


def test_presence_is_published_updated_and_removed(sm) -> None:
    me = sm.presence(ttl=1.0, model_version="v1.2.3")
    assert sm.members_alive() == {"solo": {"instance": "solo", "region": "asia-northeast1",
                                           "model_version": "v1.2.3", "healthy": True}}
    me.update(model_version="v1.2.4", healthy=False)
    assert sm.members_alive()["solo"]["model_version"] == "v1.2.4"
    with pytest.raises(ValueError, match="instance"):
        me.update(instance="other")
    time.sleep(1.5)                                          # kept alive past its TTL
    assert "solo" in sm.members_alive()
    me.stop()
    assert sm.members_alive() == {}


def test_cache_loads_once_per_key_per_expiry_under_a_burst(sm) -> None:
    calls: list[str] = []

    def loader(key: str) -> str:
        calls.append(key)
        time.sleep(0.2)                                      # a slow exchange API
        return f"{key}-{len(calls)}"

    caches = [sm.cache("ticker", ttl=1.0, loader=loader) for _ in range(4)]
    results: list[str] = []

    def burst() -> None:
        threads = [threading.Thread(target=lambda c=c: results.append(c.get("BTC")))
                   for c in caches for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    burst()
    assert calls == ["BTC"] and results == ["BTC-1"] * 20
    wait_for(lambda: gone(sm, caches[0].key_of("BTC")), timeout=10)
    results.clear()
    burst()
    assert calls == ["BTC", "BTC"] and results == ["BTC-2"] * 20
    for cache in caches:
        cache.close()


def test_cache_loader_error_frees_the_key_and_a_dead_loaders_marker_lapses(sm) -> None:
    def failing(key: str) -> str:
        raise RuntimeError("exchange down")

    broken = sm.cache("ticker", ttl=5.0, loader=failing)
    with pytest.raises(RuntimeError, match="exchange down"):
        broken.get("ETH")
    assert gone(sm, broken.marker_of("ETH"))
    broken.close()
    # A loader whose process died: its marker stays until its lease lapses.
    dead = Cache(sm, "ticker", 5.0, failing, loading_ttl=0.5)
    lease = dead._markers()
    lease.stop_keep_alive()
    sm.save_state({dead.marker_of("ETH"): dead.owner}, lease=lease)
    alive = sm.cache("ticker", ttl=5.0, loader=lambda key: f"{key}-fresh")
    started = time.monotonic()
    assert alive.get("ETH") == "ETH-fresh"
    assert time.monotonic() - started >= 0.3 and alive.loads == 1
    alive.close()


def test_expiries_are_counted_once_and_the_count_survives_a_restart(tmp_path: Path) -> None:
    """hastate_lease_expiries_total's source: counted on apply, carried by dumps, replayed
    journal entries re-derive it instead of adding to it."""
    peers = {"solo": f"127.0.0.1:{free_port()}"}
    options = dict(data_dir=tmp_path / "solo", cluster_name="leases", serve_http=False)
    sm = StateManager("solo", peers, **options).start(wait_ready=10)
    try:
        sm.save_state({"a": 1}, ttl=0.3)
        sm.save_state({"b": 1}, ttl=0.3)
        wait_for(lambda: sm.status()["lease_expiries"] == 2, timeout=10)
        sm.node.call_soon(sm.node.syncobj.forceLogCompaction)      # the count in a dump
        wait_for(lambda: sm.node.syncobj.compactions_total >= 1, timeout=10)
        sm.save_state({"c": 1}, ttl=0.3)                           # and in the journal tail
        wait_for(lambda: sm.status()["lease_expiries"] == 3, timeout=10)
    finally:
        sm.stop()
    again = StateManager("solo", peers, **options).start(wait_ready=10)
    try:
        again.get_state()
        assert again.status()["lease_expiries"] == 3               # not 0, not 1 + replays
    finally:
        again.stop()
