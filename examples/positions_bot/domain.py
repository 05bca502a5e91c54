"""A trading bot's positions, event-sourced with the ``eventsourcing`` library.

``Position`` records orders, fills and cancels as events; ``Trading`` is the application
(the bot's write side). Fills carry the exchange's fill id, and a fill already recorded
is ignored, so a writer retrying after an unknown outcome (a leader killed mid-write)
never books a fill twice.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Callable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from hastate.errors import ReadError, WriteError


class Position(Aggregate):
    """One symbol's orders and fills."""

    @event("Opened")
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.open_orders: dict[str, str] = {}     # order id -> side
        self.fill_ids: list[str] = []

    @event("OrderPlaced")
    def place_order(self, order_id: str, side: str, qty: Decimal, price: Decimal) -> None:
        self.open_orders[order_id] = side

    @event("OrderFilled")
    def fill(self, order_id: str, fill_id: str, side: str, qty: Decimal,
             price: Decimal) -> None:
        self.fill_ids.append(fill_id)

    @event("OrderCancelled")
    def cancel(self, order_id: str) -> None:
        self.open_orders.pop(order_id, None)


class Trading(Application[UUID]):
    """The bot's write side: every change is a saved aggregate (one hastate transaction)."""

    def open_position(self, symbol: str) -> UUID:
        position = Position(symbol)
        self.save(position)
        return position.id

    def place_order(self, position_id: UUID, order_id: str, side: str, qty: Decimal,
                    price: Decimal) -> None:
        self._change(position_id, lambda p: order_id in p.open_orders,
                     lambda p: p.place_order(order_id, side, qty, price))

    def fill(self, position_id: UUID, order_id: str, fill_id: str, qty: Decimal,
             price: Decimal) -> None:
        def apply(p: Position) -> None:
            p.fill(order_id, fill_id, p.open_orders[order_id], qty, price)
        self._change(position_id, lambda p: fill_id in p.fill_ids, apply)

    def cancel(self, position_id: UUID, order_id: str) -> None:
        self._change(position_id, lambda p: order_id not in p.open_orders,
                     lambda p: p.cancel(order_id))

    def _change(self, position_id: UUID, done: Callable[[Position], bool],
                change: Callable[[Position], None], timeout: float = 60.0) -> None:
        """Apply ``change`` unless ``done``; retry on conflicts and unknown outcomes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                position = self.repository.get(position_id)
                if done(position):
                    return
                change(position)
                self.save(position)
                return
            except (IntegrityError, WriteError, ReadError, AggregateNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
