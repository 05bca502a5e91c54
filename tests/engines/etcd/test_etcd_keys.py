"""Pure pieces of the etcd engine, against their definitions (no etcd needed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hastate.engines.etcd.client import range_end
from hastate.engines.etcd.keys import Layout
from hastate.engines.etcd.watch import group

BYTES = st.binary(max_size=6)


@given(prefix=BYTES.filter(lambda p: p.strip(b"\xff") != b""), key=BYTES)
def test_a_prefix_range_holds_exactly_the_keys_with_that_prefix(prefix: bytes,
                                                                key: bytes) -> None:
    assert (prefix <= key < range_end(prefix)) == key.startswith(prefix)


@given(key=st.text(min_size=1, max_size=12))
def test_state_keys_round_trip_and_never_collide_with_hastates_own(key: str) -> None:
    layout = Layout("/hastate/prod/")
    assert layout.state_key(layout.user(key)) == key
    own = [layout.leader, layout.handover, layout.member(key.replace("/", "_") or "x"),
           layout.lease(7), layout.dedup(b"\x01", 3)]
    assert all(layout.state_key(k) is None for k in own)
    assert layout.user(key) not in own


@given(revisions=st.lists(st.integers(1, 5), max_size=12).map(sorted))
def test_events_group_by_revision_in_order(revisions: list[int]) -> None:
    events = [{"kv": {"mod_revision": str(r), "key": str(i)}} for i, r in enumerate(revisions)]
    batch = group(events)
    assert [r for r, _ in batch] == sorted(set(revisions))
    assert [e for _, evs in batch for e in evs] == events
    assert all(int(e["kv"]["mod_revision"]) == r for r, evs in batch for e in evs)
