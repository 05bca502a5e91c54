"""The event workload in a campaign run (``RunConfig.events``): what :mod:`.campaign` calls.

* :func:`prepare`: every node records its catch-up subscription (``--events-out``; the
  nodes of ``RunConfig.events_bug_nodes`` with the negative control's bug).
* :func:`start_clients`: one event writer per node, next to the register client
  (``event_client_main.py``), appending under the same faults.
* :func:`check`: once the cluster converged, every node's local ``$all`` and subscription
  record against the writers' attempts (:func:`.event_checker.check_event_run`); fills
  ``RunResult.events_ok``, ``event_counts`` and ``violations["events"]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hastate.testing.event_checks import AppendAttempt

from .event_checker import check_event_run
from .event_workload import load_records

if TYPE_CHECKING:
    from .campaign import ChaosCluster, RunConfig, RunResult

EVENT_CLIENT_MAIN = Path(__file__).resolve().parent / "event_client_main.py"
#: Writer threads per node.
THREADS = 2


def _record_path(cluster: "ChaosCluster", node: str) -> Path:
    return cluster.workdir / f"events-sub-{node}.jsonl"


def _attempts_path(cluster: "ChaosCluster", node: str) -> Path:
    return cluster.workdir / f"events-attempts-{node}.json"


def prepare(cluster: "ChaosCluster", config: "RunConfig") -> None:
    """Node arguments for the subscription recorders (nothing without ``config.events``)."""
    if not config.events:
        return
    for node in cluster.ids:
        cluster.node_args[node] = [
            "--events-out", str(_record_path(cluster, node)),
            *(["--events-bug", "resume-from-head"] if node in config.events_bug_nodes else [])]


def start_clients(cluster: "ChaosCluster", config: "RunConfig", t0_ns: int,
                  api_port: int) -> None:
    """One event writer per node, in its namespace (waited for and killed with the others)."""
    if not config.events:
        return
    for i, node in enumerate(cluster.ids):
        with open(cluster.workdir / f"events-client-{node}.log", "ab") as out:
            cluster.clients[f"{node}-events"] = cluster.lab.popen(
                node, [sys.executable, str(EVENT_CLIENT_MAIN), "--index", str(i),
                       "--api-port", str(api_port), "--t0-ns", str(t0_ns),
                       "--duration", str(config.duration), "--threads", str(THREADS),
                       "--op-timeout", str(config.op_timeout),
                       "--out", str(_attempts_path(cluster, node))],
                stdout=out, stderr=subprocess.STDOUT)


def _attempts(cluster: "ChaosCluster") -> list[AppendAttempt]:
    out = []
    for node in cluster.ids:
        path = _attempts_path(cluster, node)
        if not path.exists():
            raise RuntimeError(f"event client of {node} wrote no attempts:\n" +
                               (cluster.workdir / f"events-client-{node}.log")
                               .read_text()[-2000:])
        out += [AppendAttempt(**a) for a in json.loads(path.read_text())]
    return out


def _subscriptions(cluster: "ChaosCluster", last: int | None,
                   timeout: float = 20.0) -> dict[str, list[Any]]:
    """Every node's subscription record, once each reached position ``last`` (or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        records = {n: load_records(_record_path(cluster, n)) for n in cluster.ids}
        if all(last is None or (r and r[-1][0] >= last) for r in records.values()) or \
                time.monotonic() >= deadline:
            return records
        time.sleep(0.2)


def check(cluster: "ChaosCluster", config: "RunConfig", result: "RunResult") -> None:
    """Check the event workload of a converged cluster (nothing without ``config.events``)."""
    if not config.events:
        return
    started = time.monotonic()
    alls = {}
    for node in cluster.ids:
        reply = cluster.call(node, "GET", "/events-all", timeout=30.0)
        if reply is not None:
            alls[node] = reply["events"]
    reference = alls[min(alls)] if alls else []
    subscriptions = _subscriptions(cluster, reference[-1][0] if reference else None)
    verdict = check_event_run(_attempts(cluster), alls, subscriptions)
    missing = [n for n in cluster.ids if n not in alls]
    result.checker_s["events"] = round(time.monotonic() - started, 3)
    result.events_ok = verdict.ok and not missing
    result.event_counts = {"events": verdict.events, "acknowledged": verdict.acknowledged,
                           "subscribed": {n: len(r) for n, r in subscriptions.items()}}
    result.violations["events"] = verdict.violations[:50] + \
        [f"{n}: no $all (dead or not answering)" for n in missing]
