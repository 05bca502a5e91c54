"""Finding the trace context inside Raft log entries: only state commands carry one."""

from __future__ import annotations

from pathlib import Path

from hastate import StateManager
from hastate.consensus.entry_trace import MARKER, command_meta, fail_reason_name
from hastate.consensus.membership import Change, Member
from hastate.testing import free_port

from tracing_support import Spans, spans  # noqa: F401  (fixture)


def test_only_a_traced_state_command_yields_a_trace_context(tmp_path: Path,
                                                            spans: Spans) -> None:
    sm = StateManager("solo", {"solo": f"127.0.0.1:{free_port()}"}, data_dir=tmp_path / "solo",
                      cluster_name="decode").start(wait_ready=20)
    try:
        with spans.paused():
            sm.save_state({"k": "traceparent"})   # the marker, but in a value
        sm.save_state({"k": "v"})
        log = sm.node.syncobj._SyncObj__raftLog
        entries = {entry[1]: entry[0] for entry in log[:]}
    finally:
        sm.stop()
    untraced, traced = sorted(i for i, entry in entries.items() if MARKER in entry)
    assert command_meta(entries[untraced]) == {}
    meta = command_meta(entries[traced])
    propose = spans.one("hastate.propose")
    assert meta["traceparent"].split("-")[2] == f"{propose.context.span_id:016x}"
    noop = entries[1]
    assert MARKER not in noop and command_meta(noop) == {}
    change = Change("add", Member("n9", "127.0.0.1:1")).encode()
    assert command_meta(change) == {}
    assert command_meta(b"\x00not a pickle") == {} and command_meta(b"") == {}


def test_fail_reasons_have_readable_names() -> None:
    assert [fail_reason_name(code) for code in (0, 4, 5)] == \
        ["success", "not_leader", "leader_changed"]
    assert fail_reason_name(99) == "99"
