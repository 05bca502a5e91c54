"""Lease intervals on the machine-wide monotonic clock, for tests that check leases never overlap.

A tick observer on a :class:`~hastate.consensus.node.RaftNode` appends one JSON line per
lease change: ``{"node", "term", "from", "until"}``, where ``from`` is the start of the tick
in which the lease was extended (a lower bound of when ``is_leader()`` could first be True)
and ``until`` the expiry it promised. Processes on one machine share one monotonic clock, so
a test reads every node's lines and checks that no two nodes' intervals overlap
(tests/consensus/test_lease_sigstop.py, the chaos campaign).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hastate.consensus.node import RaftNode

#: Environment variable the test node processes read: the file to append lease lines to.
ENV = "HASTATE_LEASE_TRACE"


class LeaseTrace:
    """Tick observer writing ``node``'s lease intervals to the file at ``path``."""

    def __init__(self, path: str, node: "RaftNode") -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._node = node
        self._until = float("-inf")

    def __call__(self, tick_start: float) -> None:
        term, until = self._node.lease_expiry()
        if until != self._until and until > tick_start:
            line = {"node": self._node.spec.node_id, "term": term, "from": tick_start,
                    "until": until}
            os.write(self._fd, (json.dumps(line) + "\n").encode())
        self._until = until


class IntervalTrace:
    """Writes an engine's leader intervals (``observer(term, from, until, final)``, e.g. the
    etcd engine's ``election.interval_observers``) to the file at ``path``, one line each, in
    the format of :class:`LeaseTrace` plus ``"final": true`` on the line of a step-down: the
    interval of that term ends there, before the ``until`` promised earlier."""

    def __init__(self, path: str, node_id: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._node_id = node_id

    def __call__(self, term: int, start: float, until: float, final: bool = False) -> None:
        line = {"node": self._node_id, "term": term, "from": start, "until": until,
                "final": final}
        os.write(self._fd, (json.dumps(line) + "\n").encode())


def trace_leases_from_env(node: "RaftNode") -> None:
    """With ``HASTATE_LEASE_TRACE=<file>`` set, log ``node``'s lease intervals there."""
    path = os.environ.get(ENV)
    if path:
        node.add_tick_observer(LeaseTrace(path, node))
