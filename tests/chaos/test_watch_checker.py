"""The watch-stream checker on synthetic streams, including its negative controls."""

from __future__ import annotations

import copy

from .checkers import check_watch_streams


def stream(first: int, last: int) -> list[dict]:
    return [{"rev": r, "events": [["put", f"k{r % 3}", r]]} for r in range(first, last + 1)]


def test_equal_gapless_streams_of_different_lengths_pass() -> None:
    result = check_watch_streams({"n0": stream(1, 10), "n1": stream(1, 7), "n2": stream(1, 10)})
    assert result.ok, result.summary()
    assert result.revisions == 10


def test_a_dropped_event_is_flagged_as_a_gap() -> None:
    """Negative control: the checker catches one revision missing from one node's stream."""
    streams = {"n0": stream(1, 10), "n1": stream(1, 10)}
    del streams["n1"][4]
    result = check_watch_streams(streams)
    assert not result.ok
    assert [(v.node, v.revision) for v in result.violations] == [("n1", 6)]
    assert "revisions 5..5 never delivered" in result.summary()


def test_duplicates_divergent_content_and_empty_revisions_are_flagged() -> None:
    dup = stream(1, 5)
    dup.insert(3, dict(dup[2]))
    other = copy.deepcopy(stream(1, 5))
    other[1]["events"][0][2] = "changed"
    empty = stream(1, 5)
    empty[2]["events"] = []
    result = check_watch_streams({"a": stream(1, 5), "dup": dup, "other": other,
                                  "empty": empty})
    whats = " | ".join(str(v) for v in result.violations)
    assert "dup @ revision 3: delivered again" in whats
    assert "other @ revision 2: events [['put', 'k2', 'changed']] differ from a's" in whats
    assert "empty @ revision 3: a revision with no event" in whats


def test_declared_compaction_gap_is_allowed_but_a_lagging_stream_is_not() -> None:
    restarted = stream(1, 4) + [{"compacted": 8}] + stream(8, 12)
    result = check_watch_streams({"n0": stream(1, 12), "n1": restarted}, final_revision=12)
    assert result.ok and result.declared_gaps == 1
    result = check_watch_streams({"n0": stream(1, 12), "n1": stream(1, 9)}, final_revision=12)
    assert [(v.node, v.revision) for v in result.violations] == [("n1", 10)]


def test_a_revision_no_node_delivered_is_flagged() -> None:
    result = check_watch_streams({"n0": stream(1, 3) + [{"compacted": 5}] + stream(5, 6)})
    assert [v.what for v in result.violations] == ["1 revisions no node delivered"]
