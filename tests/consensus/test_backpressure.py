"""The back-pressure bounds, against a plain model (hypothesis)."""

from __future__ import annotations

import queue

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hastate.consensus.backpressure import Admission, EntrySizes, ProposalQueue, UncommittedTail

MAX_ENTRIES, MAX_BYTES = 8, 1000

ops = st.lists(st.one_of(st.tuples(st.just("acquire"), st.integers(1, 1500)),
                         st.tuples(st.just("release"), st.integers(0, 20))), max_size=80)


@given(ops)
@settings(max_examples=200, deadline=None)
def test_admission_matches_a_model(steps: list[tuple[str, int]]) -> None:
    """Admitted iff under both bounds (a lone write may exceed the byte bound)."""
    gate = Admission(MAX_ENTRIES, MAX_BYTES)
    held: list[int] = []   # the model: sizes of writes in flight
    for op, arg in steps:
        if op == "acquire":
            expected = len(held) < MAX_ENTRIES and (not held or sum(held) + arg <= MAX_BYTES)
            assert gate.try_acquire(arg) is expected
            if expected:
                held.append(arg)
        elif held:
            size = held.pop(arg % len(held))
            gate.release(size)
        assert (gate.entries, gate.nbytes) == (len(held), sum(held))
        assert gate.entries <= MAX_ENTRIES
        assert gate.nbytes <= MAX_BYTES or gate.entries == 1
    assert 0.005 <= gate.retry_after() <= 1.0


@given(st.lists(st.integers(1, 300), max_size=40), st.integers(0, 12), st.integers(0, 2000))
@settings(max_examples=200, deadline=None)
def test_queue_drains_in_order_within_its_budget(sizes: list[int], entries: int,
                                                 nbytes: int) -> None:
    q = ProposalQueue(max_entries=16)
    accepted = []
    for n, size in enumerate(sizes):
        try:
            q.put_nowait((b"x" * size, n))
            accepted.append(size)
        except queue.Full:
            assert len(q) == 16
    assert len(accepted) == min(len(sizes), 16)
    q.drain_budget(entries, nbytes)
    drained = []
    while True:
        try:
            drained.append(len(q.get_nowait()[0]))
        except queue.Empty:
            break
    # The model: take in order while entries remain and the byte budget is still positive.
    expected, left = [], nbytes
    for size in accepted:
        if len(expected) == entries or left <= 0:
            break
        expected.append(size)
        left -= size
    assert drained == expected and q.drained_bytes == sum(expected)
    q.drain_budget(None)
    rest = []
    while len(q):
        rest.append(len(q.get_nowait()[0]))
    assert drained + rest == accepted


@given(st.integers(1, 50), st.lists(st.lists(st.integers(0, 9), max_size=30), max_size=6),
       st.integers(0, 120), st.integers(1, 40), st.integers(1, 60), st.integers(4, 60))
@settings(max_examples=300, deadline=None)
def test_entry_sizes_cap_matches_a_model(first: int, batches: list[list[int]], acked: int,
                                         window: int, max_bytes: int, keep: int) -> None:
    """The byte window: as many entries after ``acked`` as fit, at least one; no byte cap
    where sizes are unknown (before the first recorded entry, or forgotten)."""
    sizes = EntrySizes(keep=keep)
    known: dict[int, int] = {}
    index = first
    for batch in batches:
        sizes.add(index, batch)
        known.update({index + n: size for n, size in enumerate(batch)})
        index += len(batch)
        if len(known) > 2 * keep:  # the model forgets the oldest down to ``keep`` too
            known = {i: known[i] for i in sorted(known)[-keep:]}
    remembered = sorted(known)
    oldest = remembered[0] if remembered else None
    max_index = acked + window
    got = sizes.cap(acked, max_index, max_bytes)
    if oldest is None or acked + 1 < oldest or acked + 1 > remembered[-1]:
        assert got == max_index
        return
    total, expected = 0, acked
    for i in range(acked + 1, min(max_index, remembered[-1]) + 1):
        total += known[i]
        if total > max_bytes:
            break
        expected = i
    else:
        expected = max_index       # everything known fits: the entry window decides
    assert got == max(expected, acked + 1)


def test_uncommitted_tail_forgets_committed_batches() -> None:
    tail = UncommittedTail()
    tail.add(10, 100)
    tail.add(15, 50)
    tail.add(15, 0)
    assert tail.after(9) == (0, 150)
    assert tail.after(10) == (0, 50)
    assert tail.after(20) == (0, 0)
    tail.add(30, 7)
    tail.reset()
    assert tail.after(0) == (0, 0)


@pytest.mark.parametrize("done_per_s", [100, 20_000])
def test_retry_after_follows_the_completion_rate(done_per_s: int) -> None:
    """A fake clock: the hint is the time for half the window to drain, 5 ms to 1 s."""
    now = [0.0]
    gate = Admission(100, 10**9, clock=lambda: now[0])
    assert gate.retry_after() == 0.05  # no rate measured yet
    for _ in range(100):
        assert gate.try_acquire(1)
    for _ in range(int(0.5 * done_per_s)):   # half a second of steady completions
        now[0] += 1.0 / done_per_s
        gate.release(1)
        assert gate.try_acquire(1)
    assert not gate.try_acquire(1)
    expected = min(1.0, max(0.005, 50 / done_per_s))
    assert gate.retry_after() == pytest.approx(expected, rel=0.2)
