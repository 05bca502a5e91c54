"""Checker: no key attached to a lease disappeared before the lease's TTL, as clients saw it.

A client records, per lease, its TTL and the send time of every grant or keep-alive that
*succeeded* (on one monotonic clock shared by all processes of a run: one machine), the
send time of a revoke if it sent one, and every node's watch records when it saw each
attached key's delete. A succeeded keep-alive sent at ``s`` promises the lease's keys live
until ``s + ttl`` (docs/leases.md): a delete observed earlier, not preceded by a revoke or a
delete of the key by a client, is an early expiry.

:func:`check_expiry_bound` checks the other side: once a leader led long enough after the
last moment a lease may have been refreshed, the lease's keys must be gone within its TTL
plus a slack (the expirer's look interval, its notice of leadership, commit and watch
delivery): no key outlives its lease by more than that bound (docs/leases.md).

:func:`shared_grants` checks that every grant that succeeded got a lease of its own: two
holders of one lease id could end each other's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LeaseHistory:
    """What clients and watchers recorded about one lease."""

    ttl: float
    refreshes: list[float] = field(default_factory=list)   # sent times of OK grant/keep-alives
    revoked_at: float | None = None                         # sent time of a revoke
    deletes: list[tuple[str, str, float]] = field(default_factory=list)  # (node, key, seen at)


@dataclass(frozen=True)
class EarlyExpiry:
    """A key deleted ``early_by`` seconds before its lease's TTL ran out."""

    lease: int
    node: str
    key: str
    seen_at: float
    promised_until: float

    @property
    def early_by(self) -> float:
        return self.promised_until - self.seen_at


@dataclass
class ExpiryResult:
    """Verdict of :func:`check_no_early_expiry`."""

    violations: list[EarlyExpiry]
    deletes_checked: int

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        if self.ok:
            return f"no early expiry among {self.deletes_checked} observed deletes"
        worst = max(self.violations, key=lambda v: v.early_by)
        return (f"{len(self.violations)} deletes seen before their lease's TTL; worst: "
                f"{worst.key!r} of lease {worst.lease} on {worst.node}, "
                f"{worst.early_by:.3f}s early")


def check_no_early_expiry(histories: dict[int, LeaseHistory]) -> ExpiryResult:
    """Every delete of a lease's key seen at or after its last succeeded refresh + TTL,
    unless a revoke was sent first."""
    violations = []
    checked = 0
    for lease, history in sorted(histories.items()):
        if not history.refreshes:
            continue
        promised = max(history.refreshes) + history.ttl
        for node, key, seen_at in history.deletes:
            checked += 1
            if history.revoked_at is not None and seen_at >= history.revoked_at:
                continue
            if seen_at < promised:
                violations.append(EarlyExpiry(lease, node, key, seen_at, promised))
    return ExpiryResult(violations, checked)


# --------------------------------------------------------------------------- late expiry


@dataclass
class LeaseLife:
    """What bounds how long a lease's keys may live, as clients and watchers recorded it.

    ``refreshed_by``: the latest moment a grant or keep-alive of the lease may have applied
    (the reply time of one that succeeded; the send time plus the write timeout of one whose
    outcome is unknown). ``deleted``: key -> when a node first saw it deleted (None: never
    seen). ``revoked``: a revoke was sent (the expiry bound does not apply).
    """

    ttl: float
    refreshed_by: float
    revoked: bool = False
    deleted: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class LateExpiry:
    """A key that outlived ``bound``: deleted at ``seen_at`` (None: still there at the end)."""

    lease: int
    key: str
    bound: float
    seen_at: float | None

    def __str__(self) -> str:
        when = f"deleted {self.seen_at - self.bound:.3f}s after" if self.seen_at is not None \
            else "still present at the end, past"
        return f"{self.key!r} of lease {self.lease}: {when} its bound {self.bound:.3f}"


def expiry_bound(life: LeaseLife, leaders: list[tuple[float, float]],
                 slack: float) -> float | None:
    """When the lease's keys must be gone at the latest, or None if no leader led long
    enough to owe it: the first leadership ``[start, end]`` (one node, one term) with
    ``max(start, refreshed_by) + ttl + slack <= end`` gives that time (the leader restarts
    the countdown when it takes over)."""
    bounds = [max(start, life.refreshed_by) + life.ttl + slack for start, end in leaders]
    fitting = [b for b, (_, end) in zip(bounds, leaders) if b <= end]
    return min(fitting) if fitting else None


def check_expiry_bound(lives: dict[int, LeaseLife], leaders: list[tuple[float, float]],
                       present: set[str], slack: float) -> list[LateExpiry]:
    """Every unrevoked lease's keys deleted by :func:`expiry_bound` (``present``: the keys
    of the final state). Keys never seen deleted and absent at the end are not judged."""
    late = []
    for lease, life in sorted(lives.items()):
        if life.revoked:
            continue
        bound = expiry_bound(life, leaders, slack)
        if bound is None:
            continue
        for key, seen in sorted(life.deleted.items()):
            if seen is None and key in present:
                late.append(LateExpiry(lease, key, bound, None))
            elif seen is not None and seen > bound:
                late.append(LateExpiry(lease, key, bound, seen))
    return late


def shared_grants(grants: list[tuple[int, str]]) -> list[str]:
    """The lease ids that more than one succeeded grant returned (``(lease, bot)`` pairs)."""
    holders: dict[int, list[str]] = {}
    for lease, bot in grants:
        holders.setdefault(lease, []).append(bot)
    return [f"lease {lease} granted {len(bots)} times ({', '.join(bots)})"
            for lease, bots in sorted(holders.items()) if len(bots) > 1]
