"""An in-process cluster over a memory transport: consensus tests without ports or processes.

Each node is a real :class:`~hastate.consensus.node.RaftNode` (tick thread, durable journal in
a temporary directory, lease, pre-vote, membership) whose Raft messages travel through a
:class:`~hastate.consensus.transport.memory.MemoryNetwork` instead of TCP, so a test can cut
links (:meth:`MemoryCluster.partition`) or lose chosen messages (:meth:`MemoryCluster.drop`)
and see the outcome within a few election timeouts. Example::

    with MemoryCluster(3) as cluster:
        leader = cluster.wait_leader()
        cluster.partition(leader)                 # the old leader alone on one side
        new = cluster.wait_leader(among=cluster.others(leader))

Real-process clusters (``hastate.testing.LocalCluster``) remain the test for what needs a
process boundary: kill -9, SIGSTOP, TLS, the CLI.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from hastate.consensus.backpressure import Limits
from hastate.consensus.node import NodeSpec, RaftNode
from hastate.consensus.outcome import Outcome
from hastate.consensus.profiles import TimingProfile
from hastate.consensus.transport.memory import MemoryNetwork
from hastate.state.codec import Command, encode_value
from hastate.state.machine import ReplicatedState
from hastate.testing.waiting import wait_for

#: Timing for in-process clusters: heartbeats every 20 ms, elections after 0.3-0.6 s.
MEMORY_PROFILE = TimingProfile("memory", max_rtt=0.001, append_entries_period=0.02,
                               min_timeout=0.3, max_timeout=0.6, connection_timeout=1.0)


class MemoryCluster:
    """``size`` Raft nodes ``n1``..``nN`` in this process; a context manager that starts them."""

    def __init__(self, size: int = 3, *, profile: TimingProfile = MEMORY_PROFILE,
                 data_dir: str | Path | None = None, log_compaction_entries: int = 5000,
                 limits: Limits | None = None) -> None:
        self.network = MemoryNetwork()
        self.profile = profile
        self._tmp = tempfile.TemporaryDirectory(prefix="hastate-memory-") \
            if data_dir is None else None
        root = Path(data_dir) if data_dir is not None else Path(self._tmp.name)
        self.ids = [f"n{i}" for i in range(1, size + 1)]
        #: Node id -> the Raft address it has on the memory network.
        self.addresses = {node_id: f"{node_id}.memory:1" for node_id in self.ids}
        self.machines = {node_id: ReplicatedState() for node_id in self.ids}
        self.nodes: dict[str, RaftNode] = {}
        for node_id in self.ids:
            spec = NodeSpec(node_id=node_id, address=self.addresses[node_id],
                            peers={i: a for i, a in self.addresses.items() if i != node_id},
                            cluster="memory", data_dir=root / node_id, profile=profile,
                            log_compaction_entries=log_compaction_entries,
                            limits=limits if limits is not None else Limits())
            self.nodes[node_id] = RaftNode(spec, self.machines[node_id],
                                           transport_class=self.network.transport_class())

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "MemoryCluster":
        """Start every node (each on its own tick thread)."""
        for node in self.nodes.values():
            node.start()
        return self

    def stop(self) -> None:
        """Stop every node and remove the temporary data directories."""
        for node in self.nodes.values():
            node.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "MemoryCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- who leads ------------------------------------------------------------------------------
    def leaders(self) -> list[str]:
        """Ids of the nodes that are leader and hold their lease now."""
        return [node_id for node_id, node in self.nodes.items() if node.is_leader()]

    def wait_leader(self, timeout: float = 10.0, among: Iterable[str] | None = None) -> str:
        """Wait until exactly one node of ``among`` (default: all) leads with a lease."""
        candidates = set(among) if among is not None else set(self.ids)

        def one() -> str | None:
            leading = [i for i in self.leaders() if i in candidates]
            return leading[0] if len(leading) == 1 else None
        return wait_for(one, timeout, interval=0.005, what=f"a leader among {sorted(candidates)}")

    def others(self, *node_ids: str) -> list[str]:
        """Every node id except ``node_ids``."""
        return [i for i in self.ids if i not in node_ids]

    # -- writes ---------------------------------------------------------------------------------
    def write(self, node_id: str, values: dict[str, Any],
              timeout: float = 5.0) -> tuple[Any, Outcome] | None:
        """Propose an update on ``node_id``; its (result, outcome), or None after ``timeout``.

        A follower forwards the proposal to the leader it knows (PySyncObj's rule).
        """
        done = threading.Event()
        box: list[tuple[Any, Outcome]] = []
        command = Command(op="update", values={k: encode_value(k, v) for k, v in values.items()})

        def callback(result: Any, outcome: Outcome) -> None:
            box.append((result, outcome))
            done.set()

        self.nodes[node_id].propose(command.encode(), callback)
        return box[0] if done.wait(timeout) else None

    def state(self, node_id: str) -> dict[str, Any]:
        """``node_id``'s local replica of the state."""
        return self.machines[node_id].snapshot()

    # -- faults ---------------------------------------------------------------------------------
    def partition(self, *node_ids: str) -> None:
        """Cut every link between ``node_ids`` and the other nodes (both directions)."""
        self.network.partition([self.addresses[i] for i in node_ids],
                               [self.addresses[i] for i in self.others(*node_ids)])

    def heal(self) -> None:
        """Restore every link and remove every drop rule."""
        self.network.heal()

    def drop(self, rule: Callable[[str, str, dict[str, Any]], bool]) -> Callable[[], None]:
        """Lose every message ``rule(sender id, receiver id, message)`` selects; returns undo."""
        ids = {address: node_id for node_id, address in self.addresses.items()}
        return self.network.drop(lambda src, dst, message: rule(ids[src], ids[dst], message))
