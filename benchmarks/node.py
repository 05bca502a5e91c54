"""One cluster member in a child process (raw PySyncObj, or hastate with a separate bind).

    python -m benchmarks.node pysyncobj --self ADDR --peers A,B --data-dir DIR [--no-batch]
    python -m benchmarks.node hastate --id ID --peers-json JSON --data-dir DIR --profile P
                                      [--bind ADDR]

Prints ``{"ready": true}`` on stdout once started, then answers one JSON command per stdin
line with one JSON line: ``{"op": "status"}`` and ``{"op": "transfer", "to": ADDR_OR_ID}``.
It exits when stdin closes, so a driver that dies never leaves members behind.

The raw PySyncObj member is the minimal replicated dict the issue asks for: a
:class:`Store` consumer with ``@replicated`` ``set``/``get``, PySyncObj's ``FileJournal`` and
full dump, and every other setting at PySyncObj's default. ``--bind`` exists for the
multi-region failover runs, where peers reach a member through a delaying proxy: the
member's identity is the proxy's address while it listens on its own port.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated


class Store(SyncObjConsumer):
    """The replicated dict: ``set`` and a log-ordered (linearizable) ``get``."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, Any] = {}

    @replicated
    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    @replicated
    def set_many(self, items: dict[str, Any]) -> None:
        self.data.update(items)

    @replicated
    def get(self, key: str) -> Any:
        return self.data.get(key)

    def get_local(self, key: str) -> Any:
        return self.data.get(key)


class TaskRunner:
    """Run callables on a SyncObj's tick thread (PySyncObj state is not thread-safe)."""

    def __init__(self, syncobj: SyncObj) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        syncobj.addOnTickCallback(self._drain)

    def _drain(self) -> None:
        while True:
            try:
                self._tasks.get_nowait()()
            except queue.Empty:
                return

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        done = threading.Event()
        box: list[Any] = []

        def task() -> None:
            try:
                box.append(fn())
            except Exception as exc:  # report, do not kill the tick thread
                box.append(exc)
            done.set()
        self._tasks.put(task)
        if not done.wait(timeout):
            raise TimeoutError("tick thread did not run the task")
        return box[0]


def pysyncobj_conf(data_dir: Path, batch: bool, bind: str | None = None) -> SyncObjConf:
    """PySyncObj defaults plus the journal and dump files (and optionally a bind address)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if bind:
        kwargs["bindAddress"] = bind
    return SyncObjConf(appendEntriesUseBatch=batch, journalFile=str(data_dir / "raft.journal"),
                       fullDumpFile=str(data_dir / "raft.dump"), **kwargs)


def pysyncobj_status(so: SyncObj) -> dict[str, Any]:
    st = so.getStatus()
    return {k: (str(v) if v is not None and not isinstance(v, (int, float, bool, str)) else v)
            for k, v in st.items()}


def _serve(status: Callable[[], dict[str, Any]], transfer: Callable[[str], Any]) -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
            if cmd.get("op") == "status":
                reply: Any = status()
            elif cmd.get("op") == "transfer":
                reply = {"result": repr(transfer(cmd["to"]))}
            else:
                reply = {"error": f"unknown op {cmd.get('op')!r}"}
        except Exception as exc:
            reply = {"error": repr(exc)}
        print(json.dumps(reply, default=str), flush=True)


def run_pysyncobj(args: argparse.Namespace) -> None:
    store = Store()
    so = SyncObj(args.self, [p for p in args.peers.split(",") if p],
                 pysyncobj_conf(Path(args.data_dir), not args.no_batch), consumers=[store])
    tasks = TaskRunner(so)

    def transfer(to: str) -> Any:
        box: list[Any] = []
        tasks.call(lambda: so.transferLeadership(to, callback=lambda r, e: box.append(e)))
        return box
    try:
        _serve(lambda: pysyncobj_status(so), transfer)
    finally:
        so.destroy()


def run_hastate(args: argparse.Namespace) -> None:
    from hastate import StateManager
    sm = StateManager(args.id, json.loads(args.peers_json), data_dir=args.data_dir,
                      profile=args.profile)
    if args.bind:
        rebind(sm, args.bind)
    sm.start()
    try:
        _serve(sm.status, lambda to: sm.trigger_failover(to))
    finally:
        sm.stop()


def rebind(sm: Any, bind: str) -> None:
    """Make a StateManager listen on ``bind`` while peers know it by its configured address.

    Benchmark plumbing only (the proxy that adds multi-region delay sits in between).
    """
    original = sm.node._conf

    def conf() -> SyncObjConf:
        c = original()
        c.bindAddress = bind
        return c
    sm.node._conf = conf


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.node")
    sub = parser.add_subparsers(dest="system", required=True)
    p = sub.add_parser("pysyncobj")
    p.add_argument("--self", required=True)
    p.add_argument("--peers", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--no-batch", action="store_true")
    h = sub.add_parser("hastate")
    h.add_argument("--id", required=True)
    h.add_argument("--peers-json", required=True)
    h.add_argument("--data-dir", required=True)
    h.add_argument("--profile", default="lan")
    h.add_argument("--bind")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.system == "pysyncobj":
        run_pysyncobj(args)
    else:
        run_hastate(args)


if __name__ == "__main__":
    main()
