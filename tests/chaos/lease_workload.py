"""The lease/TTL workload of a chaos campaign: bots in every node process hold TTL keys
through partitions, pauses and kills (:mod:`.lease_bot`), and the run checks that no key
expired before its TTL and none outlived it by more than the documented bound.

Hooked into :mod:`.campaign` by ``RunConfig.lease`` (None: no lease workload): the nodes get
``--lease-out`` (and the bug of a negative control in their environment), and
:func:`check_run` adds ``lease_early``, ``lease_late`` and ``lease_ids`` (one lease id returned
by two grants) to the run's violations.

Negative controls (:func:`run_lease_bug_control`), node ``n2`` isolated twice and every
node's expirer wrong on purpose (``lease_bot.inject_bug``): with ``half-ttl`` the bots keep
their leases alive (never abandoning them), so only the leases the isolated bots could not
keep alive through the majority expire, early, and the checker must say so; with
``triple-ttl`` abandoned leases expire two TTLs late, and the bound check must say so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, TYPE_CHECKING

from .lease_bot import BUG_ENV, PREFIX, lease_of_key
from .lease_checker import (LeaseHistory, LeaseLife, check_expiry_bound,
                            check_no_early_expiry, expiry_bound, shared_grants)

if TYPE_CHECKING:
    from .campaign import RunResult

#: Seconds a key may outlive its lease's TTL, counted from when a stable leader owed the
#: expiry: the expirer's interval (0.5 s), its notice of a new leadership (0.5 s), commit,
#: apply and watch delivery on two shared, busy cores.
LATE_SLACK = 2.5


@dataclass
class LeaseSettings:
    """The lease workload of a run."""

    ttl: float = 2.0
    abandon: bool = True            # bots let some leases expire (else: always kept alive)
    bug: str | None = None          # lease_bot.inject_bug name, for negative controls


def record_path(workdir: Path, node: str) -> Path:
    return workdir / f"lease-bot-{node}.jsonl"


def node_args(settings: LeaseSettings | None, workdir: Path, node: str) -> list[str]:
    """Extra ``node_main.py`` arguments for ``node``."""
    if settings is None:
        return []
    return ["--lease-out", str(record_path(workdir, node)), "--lease-ttl", str(settings.ttl),
            *([] if settings.abandon else ["--lease-keep"])]


def node_env(settings: LeaseSettings | None) -> dict[str, str]:
    """Extra environment of the node processes."""
    return {BUG_ENV: settings.bug} if settings is not None and settings.bug else {}


def load_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every complete line of the nodes' lease files."""
    records = []
    for path in paths:
        if path.exists():
            data = path.read_bytes()
            records += [json.loads(line)
                        for line in data[:data.rfind(b"\n") + 1].splitlines()]
    return records


def histories(records: list[dict[str, Any]], write_timeout: float,
              judged_until: float = float("inf"),
              ) -> tuple[dict[int, LeaseHistory], dict[int, LeaseLife]]:
    """Per lease: what the early checker needs, and what the late checker needs.

    Deletes seen after ``judged_until`` are not judged early: the bots still run while their
    files are read one after another, so a delete in a later file may come from a revoke
    whose record (written before the revoke is sent) missed the earlier file's read. Any
    delete seen before the first read has its revoke on file.
    """
    early: dict[int, LeaseHistory] = {}
    late: dict[int, LeaseLife] = {}
    pending: dict[tuple[int, float], bool] = {}       # keep-alive attempts without an answer
    for r in records:
        kind = r["t"]
        if kind == "grant":
            early[r["lease"]] = LeaseHistory(r["ttl"], [r["sent"]])
            late[r["lease"]] = LeaseLife(r["ttl"], r["end"])
    for r in records:
        kind, lease = r["t"], r.get("lease") or (lease_of_key(r["key"]) if "key" in r else 0)
        if lease not in early:
            continue                                  # a grant whose reply was lost
        history, life = early[lease], late[lease]
        if kind == "attempt":
            pending[(lease, r["sent"])] = True
        elif kind == "ka":
            pending.pop((lease, r["sent"]), None)
            if r["outcome"] == "ok":
                history.refreshes.append(r["sent"])
                life.refreshed_by = max(life.refreshed_by, r["end"])
            elif r["outcome"] == "unknown":
                life.refreshed_by = max(life.refreshed_by, r["sent"] + write_timeout)
        elif kind == "revoke":
            life.revoked = True
            history.revoked_at = min(history.revoked_at or r["sent"], r["sent"])
        elif kind == "put":
            life.deleted.setdefault(r["key"], None)
        elif kind == "delete":
            if r["seen"] <= judged_until:
                history.deletes.append((r["node"], r["key"], r["seen"]))
            seen = life.deleted.get(r["key"])
            life.deleted[r["key"]] = r["seen"] if seen is None else min(seen, r["seen"])
    for lease, sent in pending:                       # the process died waiting for it
        late[lease].refreshed_by = max(late[lease].refreshed_by, sent + write_timeout)
    return early, late


def check_run(result: "RunResult", settings: LeaseSettings | None, workdir: Path,
              nodes: Iterable[str], leaders: dict[str, list[tuple[int, int]]],
              final_state: dict[str, Any], write_timeout: float) -> None:
    """Check the run's lease workload into ``result`` (``violations["lease_early"]`` and
    ``["lease_late"]``, counts in ``diagnostics["lease_workload"]``)."""
    if settings is None:
        return
    first_read = time.monotonic()
    records = load_records(record_path(workdir, n) for n in nodes)
    early, late = histories(records, write_timeout, first_read)
    found = check_no_early_expiry(early)
    spans = [(start / 1e9, end / 1e9) for spans in leaders.values() for start, end in spans]
    present = {key for key in final_state if key.startswith(PREFIX)}
    outlived = check_expiry_bound(late, spans, present, LATE_SLACK)
    result.violations["lease_early"] = [
        f"{v.key!r} of lease {v.lease} deleted on {v.node} {v.early_by:.3f}s before its TTL"
        for v in found.violations[:50]]
    result.violations["lease_late"] = [str(v) for v in outlived[:50]]
    result.violations["lease_ids"] = shared_grants(
        [(r["lease"], r.get("bot", "?")) for r in records if r["t"] == "grant"])[:50]
    faults = [(f["start_ns"] / 1e9, f["end_ns"] / 1e9) for f in result.faults
              if f.get("end_ns")]
    result.diagnostics["lease_workload"] = {
        "leases": len(early), "deletes_checked": found.deletes_checked,
        # kept alive (successful keep-alives) from before a fault until after its heal
        "kept_across_faults": sum(
            1 for h in early.values()
            if any(min(h.refreshes) < start and max(h.refreshes) > end for start, end in faults)),
        "expiries_owed": sum(1 for life in late.values() if not life.revoked and life.deleted
                             and expiry_bound(life, spans, LATE_SLACK) is not None),
        "early": len(found.violations), "late": len(outlived)}


def run_lease_bug_control(seed: int, bug: str = "half-ttl",
                          results_dir: Path | None = None) -> "RunResult":
    """Negative controls: an expirer ``bug`` (lease_bot.BUGS) while node n2 is isolated
    twice. With ``half-ttl`` the bots keep every lease alive, so only the partition lets
    leases expire (early); with ``triple-ttl`` they abandon some (expired late)."""
    from .campaign import RESULTS_DIR, RunConfig, run_campaign

    config = RunConfig(seed=seed, nodes=3, duration=13.0, tail=3.0,
                       label=f"control-lease-{bug}",
                       fixed_faults=(("isolate-one", 1.5, 3.5, "n2"),
                                     ("isolate-one", 7.0, 3.5, "n2")),
                       lease=LeaseSettings(abandon=bug != "half-ttl", bug=bug), tmpfs_mb=None)
    return run_campaign(config, results_dir or RESULTS_DIR, keep="never")
