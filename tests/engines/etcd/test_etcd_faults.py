"""A short fault tier on the etcd engine, judged by the chaos checkers.

* An etcd member (the one every bot talks to first) is killed under writes, reads and
  compare-and-sets from three bots: no acknowledged write is lost and the history is
  linearizable.
* A bot *process* holding the leader key is frozen (SIGSTOP) past its session TTL: the
  intervals in which each bot could act as leader (traced on the machine-wide monotonic
  clock) never overlap, so the overlap is 0 ms.
* A leader bot cut off from etcd by a silent partition (a proxy that forwards nothing) keeps
  running: by its own clock it stops acting before a successor can start, both in its traced
  intervals and in is_leader() sampled every few milliseconds.

Each checker also gets a negative control built from the same run, proving it would see a
violation.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from chaos.checkers import check_durability, check_lease_overlap
from chaos.history import F, History, Outcome
from chaos.linearizability import check_history

from hastate.errors import ConflictError, HAStateError
from hastate.state.codec import decode_value
from hastate.testing import wait_for
from hastate.testing.etcd import write_cluster_file
from hastate.testing.lease_trace import IntervalTrace

from .conftest import Bots

IDS = ["instance-1", "instance-2", "instance-3"]
KEYS = ["r0", "r1", "r2"]


def client_loop(sm, name: str, history: History, stop: threading.Event) -> None:
    """Writes, linearizable reads and compare-and-sets on a few registers, recorded."""
    n = 0
    while not stop.is_set():
        n += 1
        key = KEYS[n % len(KEYS)]
        kind = n % 3
        if kind == 0:
            op = history.invoke(name, key, F.WRITE, f"{name}-{n}")
            try:
                sm.save_state({key: f"{name}-{n}"}, timeout=8)
                history.complete(op, Outcome.OK)
            except HAStateError as exc:
                history.complete(op, Outcome.UNKNOWN if getattr(exc, "outcome_unknown", True)
                                 else Outcome.FAIL)
        elif kind == 1:
            op = history.invoke(name, key, F.READ)
            try:
                history.complete(op, Outcome.OK, sm.get_state(keys=[key], timeout=8).get(key))
            except HAStateError:
                history.complete(op, Outcome.FAIL)
        else:
            record = sm.records([key]).get(key)      # the local mirror's value and revision
            current = decode_value(record[0]) if record is not None else None
            revision = record[1] if record is not None else 0
            op = history.invoke(name, key, F.CAS, (current, f"{name}-{n}"))
            try:
                sm.compare_and_set(key, f"{name}-{n}", revision, timeout=8)
                history.complete(op, Outcome.OK)
            except ConflictError:
                history.complete(op, Outcome.FAIL)
            except HAStateError as exc:
                history.complete(op, Outcome.UNKNOWN if getattr(exc, "outcome_unknown", True)
                                 else Outcome.FAIL)


def test_killing_an_etcd_member_under_writes_loses_nothing(bots: Bots) -> None:
    config = bots.config("faults-kill")
    managers = {i: bots.start(config, i) for i in IDS}
    history, stop = History(), threading.Event()
    threads = [threading.Thread(target=client_loop, args=(sm, i, history, stop))
               for i, sm in managers.items()]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        bots.store.kill_member(0)
        time.sleep(3.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        final = managers["instance-2"].get_state(keys=KEYS)
        bots.store.start_member(0)
        bots.store.wait_healthy(0)
    ops = history.operations()
    acked = [op for op in ops if op.f is not F.READ and op.outcome is Outcome.OK]
    assert len(acked) >= 10, "too few acknowledged writes to judge"
    durability = check_durability(ops, final)
    assert durability.ok, durability.summary()
    linear = check_history(ops)
    assert linear.valid, linear.summary()

    # Negative controls from the same run: a final state holding an overwritten value, and a
    # read that returns a value older than a write acknowledged before the read began.
    last, older = next((last, older) for last in sorted(acked, key=lambda op: -op.complete_ns)
                       for older in acked if older.key == last.key
                       and older.complete_ns < last.invoke_ns)
    stale = {**final, last.key: older.value if older.f is F.WRITE else older.value[1]}
    assert not check_durability(ops, stale).ok
    after = last.complete_ns + 1
    stale_read = dataclasses.replace(ops[0], id=10**6, process="control", key=last.key,
                                     f=F.READ, value=stale[last.key], invoke_ns=after,
                                     complete_ns=after + 1, outcome=Outcome.OK)
    assert not check_history([op for op in ops if op.key == last.key] + [stale_read]).valid


def leader_key(bots: Bots, name: str) -> tuple[str, int] | None:
    key = base64.b64encode(f"/hastate/{name}/_leader".encode()).decode()
    kvs = bots.store.call(1, "/v3/kv/range", {"key": key}).get("kvs")
    return (base64.b64decode(kvs[0]["value"]).decode(), int(kvs[0]["create_revision"])) \
        if kvs else None


def intervals(trace: Path) -> dict[str, list[tuple[float, float]]]:
    """node -> [from, until) per leadership (token), merged from the trace's lines."""
    spans: dict[tuple[str, int], list[float]] = {}
    ended: dict[tuple[str, int], float] = {}
    for line in trace.read_text().splitlines():
        rec = json.loads(line)
        if rec["final"]:                 # stepped down: it stopped acting there
            ended[(rec["node"], rec["term"])] = rec["until"]
            continue
        span = spans.setdefault((rec["node"], rec["term"]), [rec["from"], rec["until"]])
        span[0], span[1] = min(span[0], rec["from"]), max(span[1], rec["until"])
    for key, at in ended.items():
        if key in spans:
            spans[key][1] = min(spans[key][1], at)
    out: dict[str, list[tuple[float, float]]] = {}
    for (node, _), (start, until) in spans.items():
        out.setdefault(node, []).append((start, until))
    return out


def test_a_paused_leader_process_never_overlaps_its_successor(bots: Bots) -> None:
    name = "faults-pause"
    config = write_cluster_file(bots.workdir / "pause.toml", bots.store.endpoints, name=name)
    trace = bots.workdir / "leader-trace.jsonl"
    main = Path(__file__).with_name("etcd_bot_main.py")
    procs = {}
    for i in IDS:
        with open(bots.workdir / f"{i}.log", "wb") as log:
            procs[i] = subprocess.Popen([sys.executable, str(main), str(config), i, str(trace)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    try:
        for proc in procs.values():
            assert json.loads(proc.stdout.readline()) == {"ready": True}
        old, token = wait_for(lambda: leader_key(bots, name), timeout=20, what="a leader")
        time.sleep(1.0)                                     # a few keep-alives
        os.kill(procs[old].pid, signal.SIGSTOP)
        try:
            new, new_token = wait_for(
                lambda: (held := leader_key(bots, name)) and held[0] != old and held,
                timeout=20, what="a successor")
            time.sleep(1.0)
        finally:
            resumed = time.monotonic()
            os.kill(procs[old].pid, signal.SIGCONT)
        time.sleep(1.0)
    finally:
        for proc in procs.values():
            proc.stdin.close()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    assert new_token > token
    spans = intervals(trace)
    assert old in spans and new in spans, spans
    result = check_lease_overlap(spans)
    overlap_ms = sum(o.duration_ns for o in result.overlaps) * 1000
    assert result.ok and overlap_ms == 0, result.summary()

    # Negative control: a resumed leader that kept acting until it noticed (no deadline
    # of its own) would overlap its successor.
    naive = {node: [(a, max(b, resumed) if node == old else b) for a, b in s]
             for node, s in spans.items()}
    assert not check_lease_overlap(naive).ok


def sampled_leadership(managers: dict, stop: threading.Event,
                       out: dict[str, list[list[float]]]) -> None:
    """Sample every bot's is_leader() into [start, end) intervals on the monotonic clock."""
    since: dict[str, float] = {}
    while not stop.is_set():
        for name, sm in managers.items():
            before = time.monotonic()
            leading = sm.is_leader()
            after = time.monotonic()
            if leading and name not in since:
                since[name] = before
            elif not leading and name in since:
                out.setdefault(name, []).append([since.pop(name), after])
        time.sleep(0.002)
    for name, start in since.items():
        out.setdefault(name, []).append([start, time.monotonic()])


def test_a_leader_cut_off_from_etcd_stops_acting_before_a_successor_starts(
        bots: Bots) -> None:
    from chaos.proxy import Mode, TcpProxy
    with TcpProxy() as proxy:
        proxy.add_link("cut", bots.store.client_ports[0])
        trace = bots.workdir / "cut-trace.jsonl"
        config = bots.config("faults-cut")
        cut_config = write_cluster_file(         # the same cluster, seen through the proxy only
            bots.workdir / "faults-cut-proxied.toml", [f"http://127.0.0.1:{proxy.port('cut')}"],
            name="faults-cut", discover_members=False, request_timeout=0.5)
        managers = {"instance-1": bots.start(cut_config, "instance-1")}
        wait_for(managers["instance-1"].is_leader, timeout=20, what="instance-1 leads")
        managers.update({i: bots.start(config, i) for i in IDS[1:]})
        for name, sm in managers.items():
            sm.engine.election.interval_observers.append(IntervalTrace(str(trace), name))
        samples: dict[str, list[list[float]]] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sampled_leadership, args=(managers, stop, samples))
        sampler.start()
        try:
            time.sleep(1.0)
            proxy.configure("cut", mode=Mode.BLACKHOLE)         # a silent partition
            new = wait_for(lambda: next((i for i in IDS[1:] if managers[i].is_leader()), None),
                           timeout=20, what="a successor")
            time.sleep(0.5)
            healed = time.monotonic()
            proxy.configure("cut", mode=Mode.PASS)
            time.sleep(1.0)
        finally:
            stop.set()
            sampler.join(10)
    assert not managers["instance-1"].is_leader()
    traced = intervals(trace)
    assert "instance-1" in samples and new in samples, samples
    for spans in (traced, {n: [tuple(s) for s in v] for n, v in samples.items()}):
        result = check_lease_overlap(spans)
        assert result.ok, result.summary()
    naive = {node: [(a, max(b, healed) if node == "instance-1" else b) for a, b in s]
             for node, s in samples.items()}
    assert not check_lease_overlap(naive).ok
