"""A point-in-time view of one Raft node, the only way code outside ``consensus/`` sees Raft.

:meth:`hastate.consensus.node.RaftNode.status` builds it from PySyncObj's state; the manager's
``status()``, the stats counters and the Prometheus collector read this instead of PySyncObj
internals, so a change inside the consensus layer cannot silently break them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from hastate.consensus.membership import Member


@dataclass(frozen=True)
class RaftStatus:
    """One node's Raft state; peers are keyed by their Raft address."""

    node_id: str
    address: str
    role: str                       # "leader", "follower" or "candidate" (not lease-checked)
    is_leader: bool                 # Raft leader *and* holding its lease
    term: int
    leader_id: str | None           # last known leader (None while none is known)
    leader_address: str | None
    fencing_token: int | None       # the lease's term while leading, else None
    lease_remaining: float          # seconds; 0 when not holding a lease
    commit_index: int
    applied_index: int
    last_log_index: int
    log_entries: int                # entries in the journal (shrinks at compaction)
    caught_up_in_term: bool         # leader: its no-op and all it committed are applied
    #: Leader only (PySyncObj keeps a former leadership's values): highest index known
    #: replicated on each peer, and the monotonic time of each peer's last response.
    match_index: Mapping[str, int]
    last_contact: Mapping[str, float]
    connected: frozenset[str]       # peers with an open connection
    #: Health each peer last published: address -> (healthy, applied index, monotonic time).
    peer_health: Mapping[str, tuple[bool, int, float]]
    members: tuple[Member, ...]     # the configuration in this node's log, sorted by id
    is_member: bool                 # this node is a voter in its own configuration
    leader_changes: int
    fatal_error: str | None
    compactions: int
    prevotes_started: int
    elections_started: int          # since this node's start, each a new term as candidate
    #: Back-pressure and lag: commands appended and not committed (leader; else 0; each
    #: member of a grouped entry counts, as for ``max_uncommitted_entries``), proposals
    #: waiting in the queue, and committed entries (as last told by the leader) this node has
    #: not applied yet (grows while a follower falls behind, shrinks as it catches up).
    uncommitted_entries: int = 0
    queued_proposals: int = 0
    behind_leader_entries: int = 0

    def lag(self, address: str) -> int | None:
        """Leader: entries ``address`` is behind this node's log end (None if unknown)."""
        match = self.match_index.get(address)
        return None if match is None else self.last_log_index - match
