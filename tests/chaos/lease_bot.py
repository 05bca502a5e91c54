"""The lease workload inside a chaos node process: bots holding TTL keys, and a watcher.

Started by ``node_main.py --lease-out FILE`` (the campaign's :mod:`.lease_workload`). Each
bot thread loops: grant a lease of ``ttl`` seconds, put two keys
``lw/<lease>/<bot>-<n>-<i>`` attached to it in one transaction, keep it alive every
``ttl / 3`` (0 to 12 times with ``abandon``, else until it revokes it) through this node,
whichever side of a partition it is on, then revoke it or (with ``abandon``, 70% of the
time) stop keeping it alive so it expires. A watcher of ``lw/`` records when this node applied each put and
delete. Everything is appended to FILE as JSON lines on the machine-wide monotonic clock,
which every process and namespace of the run shares:

``{"t": "grant", "lease", "ttl", "sent", "end", "bot"}`` a grant that succeeded (sent before it);
``{"t": "attempt", "lease", "sent"}`` before each keep-alive, then ``{"t": "ka", "lease",
"sent", "end", "outcome"}`` (ok / unknown / fail / ended) unless the process died first;
``{"t": "revoke", "lease", "sent"}`` before a revoke; ``{"t": "put" | "delete", "key",
"node", "rev", "seen"}`` from the watcher.

With ``HASTATE_CHAOS_LEASE_BUG=half-ttl`` (or ``triple-ttl``) the node's lease expirer is
made wrong on purpose (it expires a lease half its TTL early, or two TTLs late): the
campaign's negative controls.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from hastate import StateManager
from hastate.errors import (CompactedError, HAStateError, LeaseNotFoundError,
                            WatchCancelledError, WatchOverflowError, WriteError)
from hastate.state import txn

#: Key prefix of the workload's keys; the lease id is the second path element.
PREFIX = "lw/"
#: Environment variable naming a bug to inject into the node's lease expirer.
BUG_ENV = "HASTATE_CHAOS_LEASE_BUG"


def lease_of_key(key: str) -> int:
    """The lease a workload key was put with (its name says)."""
    return int(key[len(PREFIX):].split("/", 1)[0])


class Recorder:
    """Appends one JSON line per record to a file, whole lines only, from any thread."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._mutex = threading.Lock()

    def __call__(self, **record: Any) -> None:
        with self._mutex:
            os.write(self._fd, (json.dumps(record) + "\n").encode())


def run_bot(sm: StateManager, rec: Recorder, stop: threading.Event, name: str, ttl: float,
            abandon: bool, rng: random.Random) -> None:
    """One bot: lease after lease until ``stop`` (see the module docstring)."""
    n = 0
    while not stop.is_set():
        n += 1
        sent = time.monotonic()
        try:
            lease = sm.grant_lease(ttl)
        except HAStateError:
            stop.wait(0.2)
            continue
        rec(t="grant", lease=lease.id, ttl=ttl, sent=sent, end=time.monotonic(), bot=name)
        try:
            sm.transaction((), [txn.put(f"{PREFIX}{lease.id}/{name}-{n}-{i}", name, lease=lease)
                                for i in range(2)])
        except HAStateError:
            pass                                  # maybe put: the watchers will say
        rounds = rng.randint(0, 12) if abandon else 1 << 30
        for _ in range(rounds):
            if stop.wait(ttl / 3):
                return
            sent = time.monotonic()
            rec(t="attempt", lease=lease.id, sent=sent)
            try:
                lease.keep_alive()
                outcome = "ok"
            except LeaseNotFoundError:
                outcome = "ended"
            except WriteError as exc:
                outcome = "unknown" if exc.outcome_unknown else "fail"
            except HAStateError:
                outcome = "unknown"
            rec(t="ka", lease=lease.id, sent=sent, end=time.monotonic(), outcome=outcome)
            if outcome == "ended" or (not abandon and rng.random() < 0.05):
                break
        if not abandon or rng.random() < 0.3:
            rec(t="revoke", lease=lease.id, sent=time.monotonic())
            try:
                lease.revoke()
            except HAStateError:
                pass


def run_watcher(sm: StateManager, rec: Recorder, stop: threading.Event, node: str) -> None:
    """Record when this node applied each put and delete of a workload key."""
    while not stop.is_set():
        try:
            watcher = sm.watch(PREFIX)
        except WatchCancelledError:
            return
        try:
            while not stop.is_set():
                event = watcher.get(timeout=0.2)
                if event is not None and event.type in ("put", "delete"):
                    rec(t=event.type, key=event.key, node=node, rev=event.revision,
                        seen=time.monotonic())
        except (CompactedError, WatchOverflowError):
            continue                              # resume from now: later events still count
        except WatchCancelledError:
            return
        finally:
            watcher.cancel()


#: Bugs :func:`inject_bug` knows: how many TTLs each moves every expiry deadline by.
BUGS = {"half-ttl": -0.5, "triple-ttl": 2.0}


def inject_bug(sm: StateManager, bug: str) -> None:
    """Make the node's lease expirer wrong on purpose (negative controls): ``half-ttl``
    expires leases half their TTL early, ``triple-ttl`` two TTLs late."""
    if bug not in BUGS:
        raise ValueError(f"unknown lease bug {bug!r} (known: {sorted(BUGS)})")
    shift = BUGS[bug]
    expirer = getattr(sm, "engine", sm).lease_expirer   # the embedded engine's expirer
    honest = expirer.deadlines

    def deadlines() -> dict[int, tuple[int, float]]:
        table = sm.leases()
        return {lease: (refreshed, deadline + (shift * table[lease].ttl if lease in table
                                               else 0.0))
                for lease, (refreshed, deadline) in honest().items()}

    expirer.deadlines = deadlines                 # type: ignore[method-assign]


def start(sm: StateManager, path: Path, stop: threading.Event, node: str, ttl: float,
          abandon: bool, bots: int = 2) -> None:
    """Start the watcher and ``bots`` bot threads of this node (daemons)."""
    bug = os.environ.get(BUG_ENV)
    if bug:
        inject_bug(sm, bug)
    rec = Recorder(path)
    rng = random.Random(f"{node}-{os.getpid()}")
    threading.Thread(target=run_watcher, args=(sm, rec, stop, node), name="lease-watcher",
                     daemon=True).start()
    for i in range(bots):
        threading.Thread(target=run_bot, args=(sm, rec, stop, f"{node}b{i}", ttl, abandon,
                                               random.Random(rng.random())),
                         name=f"lease-bot-{i}", daemon=True).start()
