"""The README's first example, which is the seed's code, runs unchanged in three bot processes,
on every engine that has a cluster-file builder in :data:`CLUSTER_FILES`.

Each process finds the cluster file through HASTATE_CONFIG; no ``hastate node run``
anywhere. The example's naive ``datetime.now()`` reads back equal and naive on every node,
exactly one node leads, and its ``trigger_failover(target_instance="instance-2")`` moves
leadership with both ``watch_leader`` callbacks firing.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import pytest

from hastate import load_config
from hastate.testing import LocalCluster, wait_for
from hastate.testing import etcd, firestore
from hastate.testing.engine_files import write_engine_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("seed_bot_main.py")
SEED = ('state_manager = StateManager(project_id="crypto-bot-prod", instance_id="instance-1", '
        'region="asia-northeast1")\n'
        'state_manager.save_state({"last_processed_timestamp": datetime.now(), '
        '"active_positions": positions, "model_version": "v1.2.3"})\n'
        'current_state = state_manager.get_state()\n')


def readme_example() -> str:
    """The README's first python block without its import lines."""
    block = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return "".join(line for line in block.splitlines(keepends=True)
                   if not line.startswith(("from ", "import ")))


class Bot:
    """One bot process; ask() sends a command and waits for its JSON answer."""

    def __init__(self, workdir: Path, node_id: str, region: str, config: Path) -> None:
        source = readme_example().replace('instance_id="instance-1", region="asia-northeast1"',
                                          f'instance_id="{node_id}", region="{region}"')
        block = workdir / f"example-{node_id}.py"
        block.write_text(source)
        self.node_id = node_id
        self.log = workdir / f"{node_id}.log"
        env = {k: v for k, v in os.environ.items() if k != "HASTATE_LOG_FORMAT"}
        env["HASTATE_CONFIG"] = str(config)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(HARNESS), str(block)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=env, cwd=workdir, text=True)
        self.answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.answers.put(json.loads(line))
        self.answers.put(None)              # the process closed its stdout: it exited

    def answer(self, timeout: float = 60) -> dict[str, Any]:
        try:
            reply = self.answers.get(timeout=timeout)
        except queue.Empty:
            reply = None
        if reply is None:
            raise AssertionError(f"{self.node_id} did not answer; log:\n"
                                 f"{self.log.read_text()[-3000:]}")
        assert "error" not in reply, reply["error"]
        return reply

    def ask(self, **request: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextmanager
def raft_file(workdir: Path, name: str) -> Iterator[Path]:
    """The embedded engine: the three bots are the Raft cluster (nothing else to start)."""
    yield LocalCluster(workdir, 3, name=name).config_path


def store_file(start: Callable[[Path], ContextManager[Any]], engine: str,
               settings: Callable[[Any], dict[str, Any]]) -> Callable[[Path, str],
                                                              ContextManager[Path]]:
    """A store engine's builder: ``start(workdir)`` runs the store (and stops it after the
    test); the file has its ``[engine]`` table ``settings(store)`` and three bots."""
    @contextmanager
    def build(workdir: Path, name: str) -> Iterator[Path]:
        with start(workdir) as store:
            yield write_engine_file(workdir, name=name, engine=engine, settings=settings(store))
    return build


#: engine -> builder of the three bots' cluster file (a context manager: it starts the
#: engine's store and stops it after the test); a store engine's entry is one line.
CLUSTER_FILES: dict[str, Callable[[Path, str], ContextManager[Path]]] = {
    "raft": raft_file,
    "etcd": store_file(etcd.running, "etcd", lambda c: {"endpoints": c.endpoints}),
    "firestore": store_file(firestore.running, "firestore",
                            lambda _emulator: {"project": "crypto-bot-prod"}),
}


@pytest.fixture(params=sorted(CLUSTER_FILES))
def bots(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Bot]]:
    with CLUSTER_FILES[request.param](tmp_path / "store", "crypto-bot-prod") as config:
        nodes = load_config(config).nodes
        started = {n.id: Bot(tmp_path, n.id, n.region, config) for n in nodes}
        try:
            yield started
        finally:
            for bot in started.values():
                bot.stop()


def test_readme_example_is_the_seed_code_verbatim() -> None:
    assert readme_example().lstrip().startswith(SEED)


def test_seed_code_runs_unchanged_in_three_processes(bots: dict[str, Bot]) -> None:
    ready = {i: bot.answer(timeout=90) for i, bot in bots.items()}
    # Each bot wrote its own datetime.now() once (two bots woken by the same store event
    # may read the clock in the same microsecond, so the values need not differ).
    assert [len(r["written"]) for r in ready.values()] == [1, 1, 1], ready
    written = {ts for r in ready.values() for ts in r["written"]}

    states = {i: bot.ask(cmd="state") for i, bot in bots.items()}
    assert all(s["naive"] and s["type"] == "datetime" for s in states.values()), states
    assert len({s["iso"] for s in states.values()}) == 1, states   # the same value everywhere
    assert next(iter(states.values()))["iso"] in written          # exactly what one bot wrote

    def leaders() -> list[str]:
        return [i for i, bot in bots.items() if bot.ask(cmd="is_leader")["is_leader"]]

    wait_for(lambda: len(leaders()) == 1, timeout=30, what="exactly one is_leader()")
    first = leaders()[0]      # subscribed after it already led: told at once, and recovered
    wait_for(lambda: {"become_leader", "recovered"} <= set(bots[first].ask(cmd="events")[
        "events"]), timeout=10, what=f"callbacks of the first leader {first}")
    statements = ast.parse(readme_example()).body
    acting = next(n for n, s in enumerate(statements) if isinstance(s, ast.If))
    handover = next(n for n, s in enumerate(statements)
                    if "trigger_failover" in ast.unparse(s))
    for bot in bots.values():
        bot.ask(cmd="run", line=acting)
    orders = {i: [e for e in bot.ask(cmd="events")["events"] if e.startswith("orders:")]
              for i, bot in bots.items()}
    assert sum(len(o) for o in orders.values()) == 1, orders      # only the lease holder acted

    if leaders() == ["instance-2"]:
        seen = len(bots["instance-1"].ask(cmd="events")["events"])
        bots["instance-2"].ask(cmd="failover", to="instance-1")
        wait_for(lambda: leaders() == ["instance-1"], timeout=30, what="instance-1 leads")
        # Its callbacks (the recovery's linearizable read among them) run on its watcher
        # thread: let them finish before leadership moves again.
        wait_for(lambda: {"become_leader", "recovered"} <= set(
            bots["instance-1"].ask(cmd="events")["events"][seen:]),
            timeout=30, what="callbacks of instance-1 as leader")
    old = leaders()[0]
    before = {i: bot.ask(cmd="events")["events"] for i, bot in bots.items()}
    bots["instance-1"].ask(cmd="run", line=handover)   # the README's line, on instance-1
    wait_for(lambda: leaders() == ["instance-2"], timeout=30, what="instance-2 leads")

    def new_events(node_id: str) -> list[str]:
        return bots[node_id].ask(cmd="events")["events"][len(before[node_id]):]

    wait_for(lambda: {"become_leader", "recovered"} <= set(new_events("instance-2")),
             timeout=10, what="on_become_leader and recovery on instance-2")
    wait_for(lambda: "lose_leadership" in new_events(old), timeout=10,
             what=f"on_lose_leadership on {old}")

    for bot in bots.values():         # return normally: the manager stops at exit
        assert bot.ask(cmd="exit") == {"bye": True}
        final = bot.answer()["at_exit"]
        assert bot.proc.wait(30) == 0, bot.log.read_text()[-2000:]
        if bot.node_id == "instance-2":   # led until its exit: the stop reported the loss
            assert final[-1] == "lose_leadership", final
