"""One hastate node of a chaos campaign, run inside its network namespace.

Started by :mod:`tests.chaos.campaign` with ``NetnsLab.popen`` as::

    python node_main.py --config cluster.toml --id n0 --api-port 8700 [--compaction N]

It embeds a :class:`hastate.StateManager` built from the cluster file (Raft addresses are
the namespace addresses on the lab bridge, transport ``psk``), and serves a tiny JSON API
on ``127.0.0.1:<api-port>`` *inside its own namespace*: only the client process started in
the same namespace (and the orchestrator, through ``NetnsLab.entered``) can reach it, and
no partition rule ever touches it.

Every operation answers HTTP 200 with ``{"result": "ok" | "fail" | "unknown", ...}``:

  POST /read    {"key", "consistency"}       -> value (None = absent)
  POST /write   {"key", "value"}
  POST /cas     {"key", "expected", "new"}   compare-and-set *by value* (see :func:`cas`)
  POST /transfer {"to"}                      leadership transfer (targeted scenarios)
  POST /members {"op": "add"|"remove", "id"} membership change on the leader (the member's
                                             addresses come from the cluster file)
  GET  /status  role, leader, lease, indexes, fatal error, pid
  GET  /digest  (applied index, state hash), read atomically, for the convergence check
  GET  /diagnostics  status plus Raft internals (when a node does not converge)
  GET  /state?consistency=linearizable|local  the whole state, for the durability check

``fail`` is only answered when the operation certainly took no effect
(``WriteError.outcome_unknown`` False, a CAS conflict, a CAS whose expected value did not
match so nothing was proposed, a failed read); anything that may have been applied is
``unknown``. With ``HASTATE_LEASE_TRACE`` set, the node logs its lease intervals
(``hastate.testing.lease_trace``).
SIGUSR1 writes every thread's stack to the node's log (faulthandler).
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
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hastate import StateManager
from hastate.testing.lease_trace import trace_leases_from_env
from hastate.errors import ConflictError, HAStateError, ReadError, WriteError

log = logging.getLogger("chaos.node")


def read_with_revision(sm: StateManager, key: str) -> tuple[Any, int]:
    """(value, revision) of ``key`` on this replica, consistent with each other.

    Revisions are log indexes, so they only grow: if the revision is the same before and
    after reading the value, no apply changed the key in between (seqlock).
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
                "keys": len(machine)}


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
                elif self.path == "/transfer":
                    reply = {"result": "ok",
                             "seconds": sm.trigger_failover(body["to"], timeout=10.0)}
                elif self.path == "/members":
                    reply = {"result": "ok", "index": change_members(sm, body["op"], body["id"])}
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
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"node {args.id} serving on 127.0.0.1:{args.api_port}", flush=True)
    while not stop.wait(0.2):
        if sm.node.fatal_error:
            log.error("node stopped to protect its data: %s", sm.node.fatal_error)
            break
    server.shutdown()
    sm.stop()


if __name__ == "__main__":
    main()
