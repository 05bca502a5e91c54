"""A positions/PnL read model of ``Trading``, kept exactly once on hastate.

Each event's view update and its tracking record commit as one hastate transaction
(:meth:`hastate.eventsourcing.HastateTrackingRecorder.commit`), so a notification delivered
again (a runner restarted, or two runners overlapping on two nodes) is skipped instead of
double-applied.
"""

from __future__ import annotations

from decimal import Decimal
from functools import singledispatchmethod
from typing import Any

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from hastate.eventsourcing import HastateTrackingRecorder

from positions_bot.domain import Position

ZERO = Decimal(0)


def apply_fill(row: dict[str, Any], side: str, qty: Decimal, price: Decimal) -> dict[str, Any]:
    """The row after a fill: average-cost position, realized PnL, fill count."""
    signed = qty if side == "buy" else -qty
    held, avg, realized = row["qty"], row["avg_price"], row["realized"]
    if held == 0 or (held > 0) == (signed > 0):
        new = held + signed
        avg = (avg * abs(held) + price * qty) / abs(new)
    else:
        closed = min(abs(held), qty)
        realized += (price - avg) * closed * (1 if held > 0 else -1)
        new = held + signed
        if new == 0:
            avg = ZERO
        elif (new > 0) != (held > 0):
            avg = price
    return {**row, "qty": new, "avg_price": avg, "realized": realized,
            "fills": row["fills"] + 1}


class PositionsView(HastateTrackingRecorder):
    """Rows per position under this view's namespace, written with their tracking record."""

    def _key(self, position_id: Any) -> str:
        return f"{self.store.layout.namespace}/row/{position_id}"

    def _index(self) -> str:
        return f"{self.store.layout.namespace}/rows"

    def opened(self, tracking: Tracking, position_id: Any, symbol: str) -> None:
        row = {"symbol": symbol, "qty": ZERO, "avg_price": ZERO, "realized": ZERO,
               "fills": 0, "cancels": 0}
        self.commit(tracking, [self._index()], lambda v: {
            self._key(position_id): row,
            self._index(): [*(v[self._index()] or []), str(position_id)]})

    def filled(self, tracking: Tracking, position_id: Any, side: str, qty: Decimal,
               price: Decimal) -> None:
        key = self._key(position_id)
        self.commit(tracking, [key], lambda v: {key: apply_fill(v[key], side, qty, price)})

    def cancelled(self, tracking: Tracking, position_id: Any) -> None:
        key = self._key(position_id)
        self.commit(tracking, [key], lambda v: {key: {**v[key], "cancels":
                                                      v[key]["cancels"] + 1}})

    def rows(self) -> dict[str, dict[str, Any]]:
        """Every position's row, by position id."""
        ids = self.read([self._index()]).get(self._index(), [])
        keys = [self._key(i) for i in ids]
        values = self.read(keys)
        return {i: values[k] for i, k in zip(ids, keys)}


class PositionsProjection(Projection[PositionsView]):
    """Maps Position events onto the view (each with its tracking record)."""

    name = "positions"

    @singledispatchmethod
    def process_event(self, domain_event: DomainEventProtocol[Any], tracking: Tracking) -> None:
        self.view.commit(tracking, [], lambda _values: {})

    @process_event.register
    def _(self, domain_event: Position.Opened, tracking: Tracking) -> None:
        self.view.opened(tracking, domain_event.originator_id, domain_event.symbol)

    @process_event.register
    def _(self, domain_event: Position.OrderFilled, tracking: Tracking) -> None:
        self.view.filled(tracking, domain_event.originator_id, domain_event.side,
                         domain_event.qty, domain_event.price)

    @process_event.register
    def _(self, domain_event: Position.OrderCancelled, tracking: Tracking) -> None:
        self.view.cancelled(tracking, domain_event.originator_id)
