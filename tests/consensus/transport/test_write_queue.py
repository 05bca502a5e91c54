"""The connection's write queue against a plain bytes model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hastate.consensus.transport.write_queue import WriteQueue

ops = st.lists(st.one_of(st.tuples(st.just("append"), st.binary(max_size=40)),
                         st.tuples(st.just("send"), st.integers(1, 60),
                                   st.integers(0, 60))), max_size=60)


@given(ops)
def test_the_queue_sends_exactly_the_bytes_appended_in_order(steps: list[tuple]) -> None:
    queue, model, sent, appended = WriteQueue(), b"", b"", b""
    for step in steps:
        if step[0] == "append":
            queue.append(step[1])
            model += step[1]
            appended += step[1]
        elif queue:
            size, accepted = step[1], step[2]
            chunk = bytes(queue.peek(size))
            assert chunk == model[:size]
            assert bytes(queue.peek(size)) == chunk          # unchanged until consumed
            views = queue.slices(size, max_parts=2)
            assert len(views) <= 2 and b"".join(views) == chunk[:sum(map(len, views))]
            accepted = min(accepted, len(chunk))             # a send may write less
            queue.consume(accepted)
            sent += chunk[:accepted]
            model = model[accepted:]
        assert len(queue) == len(model) and bool(queue) == bool(model)
    while queue:
        chunk = bytes(queue.peek(7))
        queue.consume(len(chunk))
        sent += chunk
    assert sent == appended
