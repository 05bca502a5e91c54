"""A redelivered notification: the transactional view refuses it; a view that writes its row
and its tracking record separately double-applies it after a crash between the two, and
the exactly-once check (rows equal a replay) catches that."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'hastate[eventsourcing]'")

from eventsourcing.persistence import Tracking  # noqa: E402

from hastate.testing.events import MachineBackend  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from positions_bot.projection import PositionsView, apply_fill  # noqa: E402


class SplitWritesView(PositionsView):
    """The bug the transaction prevents: the row and the tracking record in two writes."""

    crash_between = False

    def filled(self, tracking: Tracking, position_id, side, qty, price) -> None:
        key = self._key(position_id)
        row = self.read([key])[key]
        self.store.write([], None, [key], lambda v: {key: apply_fill(row, side, qty, price)})
        if self.crash_between:
            raise ConnectionError("crashed before recording the tracking record")
        self.insert_tracking(tracking)


def run(view: PositionsView) -> dict:
    view.opened(Tracking("Trading", 1), "p", "BTC")
    fill = (Tracking("Trading", 2), "p", "buy", Decimal("0.5"), Decimal(100))
    if isinstance(view, SplitWritesView):
        view.crash_between = True
        with pytest.raises(ConnectionError):
            view.filled(*fill)
        view.crash_between = False
    else:
        view.filled(*fill)
    # the runner restarts from max_tracking_id and delivers notification 2 again
    assert view.max_tracking_id("Trading") == (1 if isinstance(view, SplitWritesView) else 2)
    view.filled(*fill)
    return view.rows()["p"]


def replayed() -> dict:
    row = {"symbol": "BTC", "qty": Decimal(0), "avg_price": Decimal(0),
           "realized": Decimal(0), "fills": 0, "cancels": 0}
    return apply_fill(row, "buy", Decimal("0.5"), Decimal(100))


def test_transactional_view_applies_a_redelivered_fill_once() -> None:
    assert run(PositionsView(MachineBackend(), "view")) == replayed()


def test_split_writes_view_double_applies_and_the_check_catches_it() -> None:
    row = run(SplitWritesView(MachineBackend(), "view"))
    assert row["fills"] == 2 and row["qty"] == Decimal("1.0")
    assert row != replayed()
