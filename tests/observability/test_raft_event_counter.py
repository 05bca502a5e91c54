"""RaftEventCounter adds the Raft layer's election count into NodeStats, across restarts."""

from __future__ import annotations

from hastate.observability.stats import NodeStats, RaftEventCounter


class FakeNode:
    """The two RaftNode methods the counter reads."""

    def __init__(self) -> None:
        self.elections = 0
        self.compacted = 0

    def elections_started(self) -> int:
        return self.elections

    def compactions(self) -> int:
        return self.compacted


def test_counts_add_up_across_a_restart_of_the_node() -> None:
    node = FakeNode()
    stats = NodeStats("n1")
    counter = RaftEventCounter(node, stats)
    node.elections, node.compacted = 2, 1
    counter(0.0)
    counter(0.0)                          # no new election: nothing added twice
    assert (stats.elections_started, stats.log_compactions) == (2, 1)
    node.elections = 3
    counter(0.0)
    node.elections, node.compacted = 1, 0  # restarted: the Raft layer counts from 0 again
    counter(0.0)
    assert (stats.elections_started, stats.log_compactions) == (4, 0)
