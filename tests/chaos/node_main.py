"""One hastate node of a chaos campaign, run inside its network namespace.

Started by :mod:`tests.chaos.campaign` with ``NetnsLab.popen`` as::

    python node_main.py --config cluster.toml --id n0 --api-port 8700 [--compaction N] \
        [--watch-out watch-n0.jsonl]

It embeds a :class:`hastate.StateManager` built from the cluster file (Raft addresses are
the namespace addresses on the lab bridge, transport ``psk``), and serves a tiny JSON API
on ``127.0.0.1:<api-port>`` *inside its own namespace*: only the client process started in
the same namespace (and the orchestrator, through ``NetnsLab.entered``) can reach it, and
no partition rule ever touches it.

Every operation answers HTTP 200 with ``{"result": "ok" | "fail" | "unknown", ...}``:

  POST /read    {"key", "consistency"}       -> value (None = absent)
  POST /write   {"key", "value"}
  POST /cas     {"key", "expected", "new"}   compare-and-set *by value* (see :func:`cas`)
  POST /txn-read  {"key"}                    a transaction with one get (through the log)
  POST /txn-write {"key", "value"}           a transaction with one put
  POST /txn-cas {"key", "expected", "new"}   one transaction: value == expected (or absent
                                             for None) then put, else get
  POST /pair-read, /pair-write, /pair-cas    the same on a *pair* register: two keys
                                             ``<key>/a`` and ``<key>/b`` read and written
                                             together in one transaction; its value is
                                             [a, b] (None while both are absent), so a
                                             torn transaction shows as a value never written
  POST /transfer {"to"}                      leadership transfer (targeted scenarios)
  POST /members {"op": "add"|"remove", "id"} membership change on the leader (the member's
                                             addresses come from the cluster file)
  GET  /status  role, leader, lease, indexes, fatal error, pid
  GET  /digest  (applied index, state hash), read atomically, for the convergence check
  GET  /diagnostics  status plus Raft internals (when a node does not converge)
  GET  /state?consistency=linearizable|local  the whole state, for the durability check
  POST /events-append, GET /events-all       the event workload (``event_workload.py``)

``fail`` is only answered when the operation certainly took no effect
(``WriteError.outcome_unknown`` False, a CAS conflict, a CAS whose expected value did not
match so nothing was proposed, a failed read); anything that may have been applied is
``unknown``. With ``HASTATE_LEASE_TRACE`` set, the node logs its lease intervals
(``hastate.testing.lease_trace``).
SIGUSR1 writes every thread's stack to the node's log (faulthandler).

With ``--lease-out``, the node runs the lease workload of :mod:`lease_bot` (bots holding
TTL keys, and a watcher of them) and records it to that file.

With ``--watch-out``, the node records its own watch stream from revision 1 to that file
(:func:`record_watch`), resuming after a restart where the file ends, for the campaign's
watch checker. With ``--events-out``, it records what a catch-up subscription on this node
delivers (``event_workload.record_subscription``; ``--events-bug``: a negative control).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from hastate import StateManager
from hastate.errors import (CompactedError, ConflictError, HAStateError, ReadError,
                            WatchCancelledError, WatchOverflowError, WriteError)
from hastate.state import txn
from hastate.testing.lease_trace import trace_leases_from_env

if __package__:
    from . import event_workload
else:  # a standalone script, as the campaign runs it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import event_workload  # type: ignore[no-redef]  # noqa: E402

log = logging.getLogger("chaos.node")


def read_with_revision(sm: StateManager, key: str) -> tuple[Any, int]:
    """(value, revision) of ``key`` on this replica, consistent with each other.

    A key's mod_revision only grows (it comes from the cluster revision): if it is the same
    before and after reading the value, no apply changed the key in between (seqlock).
    """
    while True:
        before = sm.revisions().get(key, 0)
        value = sm.get_state("local", keys=[key]).get(key)
        if sm.revisions().get(key, 0) == before:
            return value, before


def cas(sm: StateManager, key: str, expected: Any, new: Any) -> dict[str, Any]:
    """Set ``key`` to ``new`` iff it holds ``expected``, atomically, via revisions.

    The local replica gives the revision ``r`` at which ``expected`` was written; then
    ``compare_and_set(key, new, r)`` applies iff the key was not changed since index ``r``
    *at the moment the command is applied*, i.e. iff the register still holds ``expected``
    at the CAS's linearization point (campaign values are unique, so a revision determines
    the value). A stale replica only makes the CAS conflict, never apply wrongly; when the
    local value differs nothing is proposed, so ``fail`` is exact.
    """
    value, revision = read_with_revision(sm, key)
    if value != expected:
        return {"result": "fail", "error": f"local value {value!r} != expected"}
    try:
        sm.compare_and_set(key, new, revision)
    except ConflictError as exc:
        return {"result": "fail", "error": str(exc)}
    except WriteError as exc:
        return {"result": "unknown" if exc.outcome_unknown else "fail", "error": str(exc)}
    return {"result": "ok"}


def txn_call(sm: StateManager, compare: list, success: list, failure: list,
             ) -> dict[str, Any]:
    """Run a transaction; ``fail`` only when it certainly did not apply."""
    try:
        result = sm.transaction(compare, success, failure)
    except WriteError as exc:
        return {"result": "unknown" if exc.outcome_unknown else "fail", "error": str(exc)}
    return {"result": "ok", "succeeded": result.succeeded,
            "responses": [r.value if isinstance(r, txn.KeyValue) else r
                          for r in result.responses]}


def txn_cas(sm: StateManager, key: str, expected: Any, new: Any) -> dict[str, Any]:
    """Compare-and-set by value as one transaction (no local pre-read): exact ``fail``."""
    guard = txn.missing(key) if expected is None else txn.value(key) == expected
    reply = txn_call(sm, [guard], [txn.put(key, new)], [txn.get(key)])
    if reply["result"] == "ok" and not reply["succeeded"]:
        return {"result": "fail", "error": f"value is {reply['responses'][0]!r}"}
    return reply


def txn_read(sm: StateManager, key: str) -> dict[str, Any]:
    reply = txn_call(sm, [], [txn.get(key)], [])
    if reply["result"] != "ok":
        return {"result": "fail", "error": reply["error"]}    # a read that did not answer
    return {"result": "ok", "value": reply["responses"][0]}


def pair_keys(key: str) -> tuple[str, str]:
    """The two state keys behind pair register ``key``."""
    return f"{key}/a", f"{key}/b"


def pair_value(a: Any, b: Any) -> Any:
    """A pair register's value: None while both keys are absent, else [a, b]."""
    return None if a is None and b is None else [a, b]


def pair_read(sm: StateManager, key: str) -> dict[str, Any]:
    reply = txn_call(sm, [], [txn.get(k) for k in pair_keys(key)], [])
    if reply["result"] != "ok":
        return {"result": "fail", "error": reply["error"]}
    return {"result": "ok", "value": pair_value(*reply["responses"])}


def pair_write(sm: StateManager, key: str, value: list[Any]) -> dict[str, Any]:
    return txn_call(sm, [], [txn.put(k, v) for k, v in zip(pair_keys(key), value)], [])


def with_pair_registers(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` plus the value of every pair register its keys make up (for durability)."""
    registers = {k[:-2] for k in state if k.endswith(("/a", "/b")) and "~pair" in k}
    return {**state, **{r: pair_value(*(state.get(k) for k in pair_keys(r)))
                        for r in registers}}


def pair_cas(sm: StateManager, key: str, expected: Any, new: Any) -> dict[str, Any]:
    """Both halves hold ``expected`` (a pair value; None = both absent), then put ``new``."""
    a, b = pair_keys(key)
    guards = [txn.missing(a), txn.missing(b)] if expected is None else \
        [txn.value(a) == expected[0], txn.value(b) == expected[1]]
    reply = txn_call(sm, guards, [txn.put(a, new[0]), txn.put(b, new[1])], [])
    if reply["result"] == "ok" and not reply["succeeded"]:
        return {"result": "fail", "error": "pair does not hold the expected value"}
    return reply


def record_watch(sm: StateManager, path: Path, stop: threading.Event) -> None:
    """Append this node's watch stream to ``path``: one JSON line per revision.

    ``{"rev", "events": [[type, key, value], ...]}``, or ``{"compacted": oldest}`` when the
    node no longer holds the revision to resume from (a dump replaced its history). After a
    restart it resumes after the last complete line (a torn last line is cut off).
    """
    last = _last_recorded(path)
    with path.open("a") as out:
        while not stop.is_set():
            try:
                watcher = sm.watch(start_revision=last + 1)
            except CompactedError as exc:
                _record(out, {"compacted": exc.oldest_revision})
                last = exc.oldest_revision - 1
                continue
            except WatchCancelledError:
                return
            batch: list[list[Any]] = []
            revision = last

            def flush() -> None:
                nonlocal last, batch
                if batch:
                    _record(out, {"rev": revision, "events": batch})
                    last, batch = revision, []

            try:
                while not stop.is_set():
                    event = watcher.get(timeout=0.1)
                    if event is None or event.revision != revision:
                        flush()
                    if event is not None:
                        revision = event.revision
                        batch.append([event.type, event.key, event.value])
            except CompactedError as exc:
                flush()
                _record(out, {"compacted": exc.oldest_revision})
                last = exc.oldest_revision - 1
            except WatchOverflowError as exc:
                flush()
                last = exc.next_revision - 1
            except WatchCancelledError:
                flush()
                return
            finally:
                watcher.cancel()


def _record(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, default=repr) + "\n")
    out.flush()


def _last_recorded(path: Path) -> int:
    """The revision the file's last complete line ends at (0 for none); cuts a torn line."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        path.write_bytes(data)
    last = 0
    for line in data.splitlines():
        record = json.loads(line)
        last = record["rev"] if "rev" in record else record["compacted"] - 1
    return last


def load_watch_stream(path: Path) -> list[dict[str, Any]]:
    """The records :func:`record_watch` wrote (complete lines only)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines()]


def write(sm: StateManager, key: str, value: Any) -> dict[str, Any]:
    try:
        sm.save_state({key: value})
    except WriteError as exc:
        return {"result": "unknown" if exc.outcome_unknown else "fail", "error": str(exc)}
    return {"result": "ok"}


def read(sm: StateManager, key: str, consistency: str) -> dict[str, Any]:
    try:
        state = sm.get_state(consistency, keys=[key])
    except (ReadError, WriteError) as exc:
        return {"result": "fail", "error": str(exc)}
    return {"result": "ok", "value": state.get(key)}


def status(sm: StateManager) -> dict[str, Any]:
    so = sm.node.syncobj
    return {"id": sm.instance_id, "pid": os.getpid(), "is_leader": sm.is_leader(),
            "role": so.role, "term": so.raftCurrentTerm, "leader": sm.leader(),
            "applied": so.raftLastApplied, "commit": so.raftCommitIndex,
            "last_log_index": so.last_log_index(), "fatal": sm.node.fatal_error,
            "ready": sm.ready()}


def diagnostics(sm: StateManager) -> dict[str, Any]:
    """Everything that helps explain a stuck node (read racily from the tick thread's state)."""
    so = sm.node.syncobj
    out: dict[str, Any] = {"status": status(sm), "raft_thread_alive": sm.node.running}
    probes = {
        "manager": sm.status,
        "voted_for": lambda: so._SyncObj__votedForNodeId,
        "first_log_index": lambda: so._SyncObj__raftLog[0][1],
        "log_entries": lambda: len(so._SyncObj__raftLog),
        "next_index": lambda: {n.id: i for n, i in dict(so._SyncObj__raftNextIndex).items()},
        "connected": lambda: sorted(n.id for n in set(so._SyncObj__connectedNodes)),
        "election_in_s": lambda: so._SyncObj__raftElectionDeadline - __import__("time").monotonic(),
        "stickiness_heard_ago_s": lambda: __import__("time").monotonic()
        - so.stickiness._heard_at,
    }
    for name, probe in probes.items():
        try:
            out[name] = probe()
        except Exception as exc:  # a name that changed in src/: say so, keep the rest
            out[name] = f"unavailable: {exc!r}"
    return out


def digest(sm: StateManager) -> dict[str, Any]:
    machine = sm.machine
    with machine._lock:  # RLock: applied index and hash of the same state
        return {"applied": machine.applied_index, "hash": machine.state_hash(),
                "keys": len(machine), "revision": machine.revision}


def change_members(sm: StateManager, op: str, node_id: str) -> int:
    if op == "add":
        return sm.add_member(sm.config.member(node_id), timeout=10.0)
    return sm.remove_member(node_id, timeout=10.0)


def make_server(sm: StateManager, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _reply(self, obj: Any, code: int = 200) -> None:
            body = json.dumps(obj, default=repr).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            try:
                if url.path == "/status":
                    self._reply(status(sm))
                elif url.path == "/diagnostics":
                    self._reply(diagnostics(sm))
                elif url.path == "/digest":
                    self._reply(digest(sm))
                elif url.path in event_workload.GET_ROUTES:
                    self._reply(event_workload.GET_ROUTES[url.path](sm, parse_qs(url.query)))
                elif url.path == "/state":
                    consistency = parse_qs(url.query).get("consistency", ["linearizable"])[0]
                    try:
                        self._reply({"result": "ok", "state": sm.get_state(consistency),
                                     "applied": sm.machine.applied_index})
                    except (ReadError, WriteError) as exc:
                        self._reply({"result": "fail", "error": str(exc)})
                else:
                    self._reply({"error": "not found"}, 404)
            except Exception as exc:  # status while the node is starting or stopping
                self._reply({"error": repr(exc)}, 500)

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))
                              or b"{}")
            try:
                if self.path == "/read":
                    reply = read(sm, body["key"], body.get("consistency", "linearizable"))
                elif self.path == "/write":
                    reply = write(sm, body["key"], body["value"])
                elif self.path == "/cas":
                    reply = cas(sm, body["key"], body["expected"], body["new"])
                elif self.path == "/txn-read":
                    reply = txn_read(sm, body["key"])
                elif self.path == "/txn-write":
                    reply = txn_call(sm, [], [txn.put(body["key"], body["value"])], [])
                elif self.path == "/txn-cas":
                    reply = txn_cas(sm, body["key"], body["expected"], body["new"])
                elif self.path == "/pair-read":
                    reply = pair_read(sm, body["key"])
                elif self.path == "/pair-write":
                    reply = pair_write(sm, body["key"], body["value"])
                elif self.path == "/pair-cas":
                    reply = pair_cas(sm, body["key"], body["expected"], body["new"])
                elif self.path == "/transfer":
                    reply = {"result": "ok",
                             "seconds": sm.trigger_failover(body["to"], timeout=10.0)}
                elif self.path == "/members":
                    reply = {"result": "ok", "index": change_members(sm, body["op"], body["id"])}
                elif self.path in event_workload.POST_ROUTES:
                    reply = event_workload.POST_ROUTES[self.path](sm, body)
                else:
                    self._reply({"error": "not found"}, 404)
                    return
            except HAStateError as exc:  # anything else: we cannot say it did not apply
                reply = {"result": "unknown", "error": repr(exc)}
            except Exception as exc:
                log.exception("request %s failed", self.path)
                reply = {"result": "unknown", "error": repr(exc)}
            self._reply(reply)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--compaction", type=int, default=5000)
    parser.add_argument("--write-timeout", type=float, default=3.0)
    parser.add_argument("--join", action="store_true")
    parser.add_argument("--watch-out", type=Path, default=None)
    parser.add_argument("--lease-out", type=Path, default=None)      # lease_bot.py
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--lease-keep", action="store_true")
    parser.add_argument("--events-out", type=Path, default=None)
    parser.add_argument("--events-bug", choices=event_workload.BUGS, default=None)
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks into the node log
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sm = StateManager.from_config(args.config, args.id, write_timeout=args.write_timeout,
                                  log_compaction_entries=args.compaction, join=args.join)
    trace_leases_from_env(sm.node)
    sm.start()
    server = make_server(sm, args.api_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    if args.watch_out is not None:
        threading.Thread(target=record_watch, args=(sm, args.watch_out, stop),
                         name="watch-recorder", daemon=True).start()
    if args.lease_out is not None:
        import lease_bot   # next to this script
        lease_bot.start(sm, args.lease_out, stop, args.id, args.lease_ttl, not args.lease_keep)
    if args.events_out is not None:
        threading.Thread(target=event_workload.record_subscription,
                         args=(sm, args.events_out, stop, args.events_bug),
                         name="events-recorder", daemon=True).start()
    print(f"node {args.id} serving on 127.0.0.1:{args.api_port}", flush=True)
    while not stop.wait(0.2):
        if sm.node.fatal_error:
            log.error("node stopped to protect its data: %s", sm.node.fatal_error)
            break
    server.shutdown()
    sm.stop()


if __name__ == "__main__":
    main()
