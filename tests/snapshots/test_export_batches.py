"""The restore's batching, against its model: every key once, within the limits, and a key
never lands in an earlier batch than a key changed before it in the source."""

from __future__ import annotations

from hypothesis import given, strategies as st

from hastate.snapshots.portable import _cost, batches

records = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.tuples(st.binary(max_size=40), st.integers(1, 30)).map(
        lambda r: (r[0], r[1], r[1], 1)),
    max_size=60)


@given(records, st.integers(1, 8), st.integers(100, 400))
def test_batches_keep_revision_order_and_limits(data, max_ops: int, max_bytes: int) -> None:
    cut = list(batches(data, max_ops, max_bytes))
    placed = {key: n for n, batch in enumerate(cut) for key, _ in batch}
    assert sorted(placed) == sorted(data) and sum(len(b) for b in cut) == len(data)
    for batch in cut:
        assert 0 < len(batch) <= max_ops
        assert len(batch) == 1 or sum(_cost(k, r) for k, r in batch) <= max_bytes
    for a in data:
        for b in data:
            if data[a][1] < data[b][1]:
                assert placed[a] <= placed[b]


def test_keys_of_one_revision_share_a_batch_when_they_fit() -> None:
    data = {k: (b"v", rev, rev, 1) for k, rev in (("a", 1), ("b", 2), ("c", 2), ("d", 3))}
    assert [[k for k, _ in b] for b in batches(data, 2, 10_000)] == [["a"], ["b", "c"], ["d"]]
