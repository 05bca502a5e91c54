"""A bot process running the README's first example, statement by statement.

``python seed_bot_main.py BLOCK_FILE``: BLOCK_FILE holds the example (import lines dropped,
this node's instance_id and region already in it). The first three statements (construct,
save_state, get_state) and the watch_leader/configure_failover lines run at once; then the
process answers JSON commands on stdin, one per line:

* ``{"cmd": "state"}``: the read-back last_processed_timestamp (isoformat, naive?, fold)
* ``{"cmd": "is_leader"}``, ``{"cmd": "events"}``: leadership and callback events
* ``{"cmd": "run", "line": N}``: run statement N of the example (e.g. trigger_failover)
* ``{"cmd": "failover", "to": ID}``: the harness's own trigger_failover (not the README's)
* ``{"cmd": "exit"}``: return normally; the manager stops at interpreter exit, then the
  callback events are printed once more (``{"at_exit": [...]}``)
"""

from __future__ import annotations

import ast
import atexit
import datetime as _dt
import json
import sys
import traceback

events: list[str] = []
written: list[str] = []


class datetime(_dt.datetime):  # noqa: N801 (the example's name)
    """``datetime`` whose now() records what the example wrote."""

    @classmethod
    def now(cls, tz: _dt.tzinfo | None = None) -> _dt.datetime:  # type: ignore[override]
        value = _dt.datetime.now(tz)
        written.append(value.isoformat())
        return value


def main() -> None:
    from hastate import StateManager

    # Registered before the manager's own exit hook, so it runs after the manager stopped:
    # the leader's watcher then reports the loss on the way out.
    atexit.register(lambda: reply({"at_exit": events}))
    source = open(sys.argv[1]).read()
    statements = ast.parse(source).body
    namespace = {
        "StateManager": StateManager, "datetime": datetime,
        "positions": [{"symbol": "BTC-USD", "qty": "0.5"}],
        "start_trading": lambda *token: events.append("become_leader"),
        "stop_trading": lambda: events.append("lose_leadership"),
        "reconcile": lambda state: events.append("recovered"),
        "place_orders": lambda state, fencing_token: events.append(f"orders:{fencing_token}"),
    }

    def run(index: int) -> None:
        code = compile(ast.Module([statements[index]], []), "README.md", "exec")
        exec(code, namespace)

    for index, statement in enumerate(statements):
        if isinstance(statement, ast.If) or "trigger_failover" in ast.unparse(statement):
            continue    # acting and handing over are the test's to decide
        run(index)
    reply({"ready": True, "written": written})
    sm = namespace["state_manager"]
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["cmd"] == "exit":
                reply({"bye": True})
                return
            if request["cmd"] == "state":
                ts = sm.get_state()["last_processed_timestamp"]
                reply({"iso": ts.isoformat(), "naive": ts.tzinfo is None, "fold": ts.fold,
                       "type": type(ts).__name__})
            elif request["cmd"] == "is_leader":
                reply({"is_leader": sm.is_leader()})
            elif request["cmd"] == "events":
                reply({"events": events})
            elif request["cmd"] == "run":
                run(request["line"])
                reply({"ok": True})
            elif request["cmd"] == "failover":
                sm.trigger_failover(request["to"], timeout=30)
                reply({"ok": True})
        except Exception:
            reply({"error": traceback.format_exc()})


def reply(obj: object) -> None:
    print(json.dumps(obj), flush=True)


if __name__ == "__main__":
    main()
