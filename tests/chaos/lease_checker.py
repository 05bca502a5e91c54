"""Checker: no key attached to a lease disappeared before the lease's TTL, as clients saw it.

A client records, per lease, its TTL and the send time of every grant or keep-alive that
*succeeded* (on one monotonic clock shared by all processes of a run: one machine), the
send time of a revoke if it sent one, and every node's watch records when it saw each
attached key's delete. A succeeded keep-alive sent at ``s`` promises the lease's keys live
until ``s + ttl`` (docs/leases.md): a delete observed earlier, not preceded by a revoke or a
delete of the key by a client, is an early expiry.
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
