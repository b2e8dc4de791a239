"""Fakes for Inventory's handlers: the products' stock and the reservations in dicts (the same named
methods as `tinysaga.inventory.repository.InventoryRepository`, the same semantics; a write is kept
at once, its event only when the unit of work commits), and Order's answer to "did you ask for this
compensation?"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.unit.fakes import FakeUnitOfWork
from tinysaga.contracts import events as ev
from tinysaga.inventory.domain import CANCELLED, REJECTED, RELEASED, RESERVED, Reserve, Status, reserve
from tinysaga.inventory.repository import Reservation
from tinysaga.platform.calls import Unreachable


@dataclass
class FakeInventory:
    """Products' stock and reservations in dicts; `of(uow)` is the repository of a unit of work,
    with the same named methods as `InventoryRepository`."""

    stock: dict[str, int] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    locks: list[list[str]] = field(default_factory=list)  # the orders of each lock_reservations call

    def of(self, uow: FakeUnitOfWork) -> FakeInventoryRepository:
        return FakeInventoryRepository(self, uow)


@dataclass
class FakeInventoryRepository:
    db: FakeInventory
    uow: FakeUnitOfWork

    async def lock_reservations(self, order_ids: Sequence[str]) -> dict[str, Reservation]:
        """These orders' reservation rows, by order (an order without one is not there)."""
        self.db.locks.append(list(order_ids))
        return {i: self.db.reservations[i] for i in order_ids if i in self.db.reservations}

    async def reserve(self, order_id: str, product_id: str, quantity: int, answers: dict[Status, Any]) -> Status:
        """domain.reserve for an order without a row (unknown product: 0 in stock): the quantity
        taken on RESERVE, the row (the primary key refuses a second) and its answer staged with it."""
        assert order_id not in self.db.reservations, "unique violation"
        decision = reserve(self.db.stock.get(product_id, 0), quantity, None)
        status = RESERVED if decision is Reserve.RESERVE else REJECTED
        if status is RESERVED:
            self.db.stock[product_id] -= quantity
        self.db.reservations[order_id] = Reservation(product_id, quantity, status)
        await self.uow.stage(answers[status])
        return status

    async def cancel(self, order_id: str, product_id: str, quantity: int, event: Any = None) -> None:
        """A CANCELLED row for an order with none, and `event` staged with it."""
        assert order_id not in self.db.reservations, "unique violation"
        self.db.reservations[order_id] = Reservation(product_id, quantity, CANCELLED)
        if event is not None:
            await self.uow.stage(event)

    async def give_back(self, order_id: str, product_id: str, quantity: int, event: Any = None) -> None:
        """The quantity back in stock, the row RELEASED, and `event` staged with the row."""
        self.db.stock[product_id] = self.db.stock.get(product_id, 0) + quantity
        r = self.db.reservations[order_id]
        self.db.reservations[order_id] = Reservation(r.product_id, r.quantity, RELEASED)
        if event is not None:
            await self.uow.stage(event)


@dataclass
class FakeOrders:
    """Order's answer to "did you ask for this compensation?" (the orders it timed out, and those it
    canceled), and what it was asked."""

    timed_out_orders: set[str] = field(default_factory=set)
    canceled_orders: set[str] = field(default_factory=set)
    asked: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False

    async def requested(self, order_id: str, event_name: str) -> bool:
        self.asked.append((order_id, event_name))
        if self.down:
            raise Unreachable("no replica of order answered")
        held = {ev.ORDER_TIMED_OUT: self.timed_out_orders, ev.ORDER_CANCEL_REQUESTED: self.canceled_orders}
        return order_id in held.get(event_name, set())
