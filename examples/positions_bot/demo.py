"""``python -m positions_bot.demo`` (from ``examples/``): the positions bot on a local cluster.

Starts a three-node cluster on loopback (instance-1 in this process, two node processes),
books orders and fills through ``Trading`` while the positions projection runs, SIGKILLs
the leader midway, then rebuilds the projection from the events into a fresh view and
prints both: they are equal. Everything it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventsourcing.projection import ProjectionRunner

import hastate.eventsourcing as hes
from hastate.testing import wait_for
from hastate.testing.embedded import EmbeddedCluster
from positions_bot.domain import Trading
from positions_bot.projection import PositionsProjection, PositionsView

ENV = {"PERSISTENCE_MODULE": "hastate.eventsourcing", "TRADING_HASTATE_NAMESPACE": "bot",
       "POSITIONS_HASTATE_NAMESPACE": "view-live"}


def runner(env: dict[str, str]) -> ProjectionRunner[Any, PositionsView]:
    return ProjectionRunner(application_class=Trading, projection_class=PositionsProjection,
                            view_class=PositionsView, env=env)


def show(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(title)
    for row in sorted(rows.values(), key=lambda r: r["symbol"]):
        print(f"  {row['symbol']:<4} qty {row['qty']:>6}  avg {row['avg_price']:>10.2f}  "
              f"realized {row['realized']:>8.2f}  fills {row['fills']:>3}  "
              f"cancels {row['cancels']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="positions-bot-") as tmp, \
            EmbeddedCluster(Path(tmp), 3, name="positions-bot").running(http=False) as cluster:
        assert cluster.sm is not None
        hes.bind(cluster.sm)
        cluster.make_leader("instance-2")
        app = Trading(env=ENV)
        ids = [app.open_position(s) for s in ("BTC", "ETH", "SOL")]
        live = runner(ENV)
        for i in range(args.fills):
            if i == args.fills // 2:
                print(f"killing the leader (instance-2) after {i} fills")
                cluster.kill("instance-2", signal.SIGKILL)
                wait_for(lambda: cluster.sm.leader() in ("instance-1", "instance-3"),
                         timeout=30)
                print(f"new leader: {cluster.sm.leader()}")
            side = "buy" if i % 4 != 3 else "sell"
            qty, price = Decimal(i % 5 + 1) / 10, Decimal(100 + i)
            app.place_order(ids[i % 3], f"o{i}", side, qty, price)
            app.fill(ids[i % 3], f"o{i}", f"fill-{i}", qty, price)
            if i % 6 == 0:
                app.cancel(ids[i % 3], f"o{i}")
        final = app.recorder.max_notification_id()
        live.wait(final, timeout=60)
        rebuilt = runner({**ENV, "POSITIONS_HASTATE_NAMESPACE": "view-rebuilt"})
        rebuilt.wait(final, timeout=60)
        show(f"live projection ({final} events):", live.view.rows())
        show("rebuilt from the events:", rebuilt.view.rows())
        same = live.view.rows() == rebuilt.view.rows()
        print("rebuilt == live" if same else "MISMATCH: rebuilt != live")
        rebuilt.stop()
        live.stop()
        hes.bind(None)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
