"""Inventory's steps of the saga: `reserve` on PAYMENT_DONE (batched), and `release` on
ORDER_TIMED_OUT, its compensation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from tinysaga.contracts import events as ev
from tinysaga.inventory.domain import INVENTORY_NOT_AVAILABLE, Release, Reserve, Status, release, reservation_status
from tinysaga.inventory.repository import Reservation
from tinysaga.platform.consumer import Handler, HandlerContext

log = logging.getLogger("tinysaga.inventory")


class Reservations(Protocol):
    """What the handlers need of the repository (`InventoryRepository` on a unit of work)."""

    async def lock_reservation(self, order_id: str) -> Reservation | None: ...
    async def take_stock(self, product_id: str, quantity: int) -> Reserve: ...
    async def add_reservation(
        self, order_id: str, product_id: str, quantity: int, status: Status, event: ev.Event
    ) -> None: ...
    async def cancel(self, order_id: str, product_id: str, quantity: int) -> None: ...
    async def give_back(self, order_id: str, product_id: str, quantity: int) -> None: ...


class Orders(Protocol):
    """What the handlers ask Order (`adapters.OrderClient`)."""

    async def timed_out(self, order_id: str) -> bool: ...


def reply(name: str, event: ev.Event, **extra: Any) -> ev.Event:
    """Inventory's answer to a PAYMENT_DONE: the order's fields carried over."""
    return ev.make_event(
        name,
        correlation_id=event.correlationId,
        orderId=event.orderId,
        userId=event.userId,
        orderStatus=name,
        paymentType=event.paymentType,
        transactionId=event.transactionId,
        productId=event.productId,
        productQuantity=event.productQuantity,
        price=event.price,
        totalAmount=event.totalAmount,
        currency=event.currency,
        **extra,
    )


class InventoryHandlers:
    def __init__(self, repository: Callable[[Any], Reservations], orders: Orders) -> None:
        self.repository = repository  # the repository of a unit of work
        self.orders = orders

    def by_step(self) -> dict[str, Handler]:
        return {"reserve": self.reserve, "release": self.release}

    async def reserve(self, event: ev.Event, ctx: HandlerContext) -> None:
        """Reserve the paid quantity (one conditional UPDATE), or reject it; one reservation row per
        order, written with its answer (INVENTORY_RESERVED or INVENTORY_INSUFFICIENT) in one statement."""
        paid = ev.typed_as(event, ev.PaymentDone)
        assert paid.orderId and paid.productId and paid.productQuantity  # required by PaymentDone
        async with ctx.transaction() as uow:
            repo = self.repository(uow)
            prior = await repo.lock_reservation(paid.orderId)
            if prior is not None:  # domain.reserve: ALREADY
                log.info("order %s already has a reservation (%s); nothing to do", paid.orderId, prior.status)
                return
            status = reservation_status(await repo.take_stock(paid.productId, paid.productQuantity))
            if status == Status.RESERVED:
                answer = reply(ev.INVENTORY_RESERVED, paid)
            else:
                answer = reply(
                    ev.INVENTORY_INSUFFICIENT, paid, inventoryFailReason=INVENTORY_NOT_AVAILABLE, isPartialOrder=False
                )
            await repo.add_reservation(paid.orderId, paid.productId, paid.productQuantity, status, answer)

    async def release(self, event: ev.Event, ctx: HandlerContext) -> None:
        """Compensation: give back a reservation; if the timeout came first, make sure a late
        PAYMENT_DONE reserves nothing. Only for an order Order did time out (asked over HTTP, so
        before the transaction); any other ORDER_TIMED_OUT is recorded as handled and ignored."""
        timed_out = ev.typed_as(event, ev.OrderTimedOut)
        order_id = timed_out.orderId
        assert order_id  # required by OrderTimedOut
        if not await self.orders.timed_out(order_id):
            log.warning("ORDER_TIMED_OUT for order %s, which Order did not time out: ignored", order_id)
            async with ctx.transaction():
                return
        async with ctx.transaction() as uow:
            repo = self.repository(uow)
            prior = await repo.lock_reservation(order_id)
            match release(None if prior is None else prior.status):
                case Release.CANCEL:
                    await repo.cancel(order_id, timed_out.productId or "", timed_out.productQuantity or 1)
                case Release.RELEASE:
                    assert prior is not None
                    await repo.give_back(order_id, prior.product_id, prior.quantity)
                    log.info("released the reservation of timed-out order %s", order_id)
                case Release.NOTHING:
                    pass


def handlers(repository: Callable[[Any], Reservations], orders: Orders) -> dict[str, Handler]:
    """Inventory's handlers, by step name."""
    return InventoryHandlers(repository, orders).by_step()
