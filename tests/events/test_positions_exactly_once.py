"""The positions example on a real cluster: exactly-once projection through a leader kill,
a projecting runner restart and writer retries; a rebuilt projection equals the live one."""

from __future__ import annotations

import signal
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'hastate[eventsourcing]'")

from eventsourcing.projection import ProjectionRunner  # noqa: E402

import hastate.eventsourcing as hes  # noqa: E402
from hastate.testing import wait_for  # noqa: E402
from hastate.testing.embedded import EmbeddedCluster  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from positions_bot.domain import Trading  # noqa: E402
from positions_bot.projection import (ZERO, PositionsProjection, PositionsView,  # noqa: E402
                                      apply_fill)

pytestmark = pytest.mark.integration

FILLS = 45
ENV = {"PERSISTENCE_MODULE": "hastate.eventsourcing", "TRADING_HASTATE_NAMESPACE": "bot",
       "POSITIONS_HASTATE_NAMESPACE": "view-live"}


def runner(env: dict[str, str]) -> ProjectionRunner[Any, PositionsView]:
    return ProjectionRunner(application_class=Trading, projection_class=PositionsProjection,
                            view_class=PositionsView, env=env)


def expected_rows(symbols: dict[str, str], fills: list[tuple]) -> dict[str, dict[str, Any]]:
    rows = {pid: {"symbol": s, "qty": ZERO, "avg_price": ZERO, "realized": ZERO, "fills": 0,
                  "cancels": 0} for pid, s in symbols.items()}
    for pid, side, qty, price, cancelled in fills:
        rows[pid] = apply_fill(rows[pid], side, qty, price)
        rows[pid]["cancels"] += cancelled
    return rows


def test_projection_is_exactly_once_through_leader_kill_and_runner_restart(
        tmp_path: Path) -> None:
    with EmbeddedCluster(tmp_path, 3, name="positions").running(http=False) as cluster:
        assert cluster.sm is not None
        hes.bind(cluster.sm)
        try:
            cluster.make_leader("instance-2")
            app = Trading(env=ENV)
            symbols = {str(app.open_position(s)): s for s in ("BTC", "ETH", "SOL")}
            ids = list(symbols)
            live = runner(ENV)
            booked: list[tuple] = []
            errors: list[BaseException] = []

            def write() -> None:
                try:
                    for i in range(FILLS):
                        pid, oid = ids[i % 3], f"o{i}"
                        side = "buy" if i % 4 != 3 else "sell"
                        qty, price = Decimal(i % 5 + 1) / 10, Decimal(100 + i)
                        app.place_order(UUID(pid), oid, side, qty, price)
                        app.fill(UUID(pid), oid, f"fill-{i}", qty, price)
                        if i % 6 == 0:
                            app.cancel(UUID(pid), oid)
                        booked.append((pid, side, qty, price, int(i % 6 == 0)))
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)

            writer = threading.Thread(target=write)
            writer.start()
            wait_for(lambda: len(booked) >= 10 or errors, timeout=60)
            cluster.kill("instance-2", signal.SIGKILL)
            wait_for(lambda: cluster.sm.leader() in ("instance-1", "instance-3"), timeout=30)
            wait_for(lambda: len(booked) >= 25 or errors, timeout=90)
            live.stop()                       # the projecting process restarts...
            live = runner(ENV)                # ...and resumes from its tracking record
            writer.join(180)
            assert not errors, errors
            assert not writer.is_alive()

            final = app.recorder.max_notification_id()
            live.wait(final, timeout=60)
            want = expected_rows(symbols, booked)
            assert live.view.rows() == want
            notifications = app.recorder.select_notifications(1, 10_000)
            ids = [n.id for n in notifications]      # increasing in commit order, with gaps
            assert ids == sorted(set(ids)) and ids[-1] == final
            assert sum(n.topic.endswith("OrderFilled") for n in notifications) == FILLS

            rebuilt = runner({**ENV, "POSITIONS_HASTATE_NAMESPACE": "view-rebuilt"})
            rebuilt.wait(final, timeout=60)
            assert rebuilt.view.rows() == want
            rebuilt.stop()
            live.stop()
        finally:
            hes.bind(None)
