"""Inventory's steps of the saga: `reserve` on PAYMENT_DONE (batched), and `release` on
ORDER_TIMED_OUT or ORDER_CANCEL_REQUESTED, its compensation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tinysaga.contracts import events as ev
from tinysaga.inventory.domain import (
    INVENTORY_NOT_AVAILABLE,
    REJECTED,
    RESERVED,
    Release,
    Status,
    release,
    release_answer,
)
from tinysaga.inventory.repository import Reservation
from tinysaga.platform.consumer import Handler, HandlerContext

log = logging.getLogger("tinysaga.inventory")


class Reservations(Protocol):
    """What the handlers need of the repository (`InventoryRepository` on a unit of work)."""

    async def lock_reservations(self, order_ids: Sequence[str]) -> dict[str, Reservation]: ...
    async def reserve(
        self, order_id: str, product_id: str, quantity: int, answers: Mapping[Status, ev.Event]
    ) -> Status: ...
    async def cancel(self, order_id: str, product_id: str, quantity: int, event: ev.Event | None = None) -> None: ...
    async def give_back(self, order_id: str, product_id: str, quantity: int, event: ev.Event | None = None) -> None: ...


class Orders(Protocol):
    """What the handlers ask Order (`adapters.OrderClient`)."""

    async def requested(self, order_id: str, event_name: str) -> bool: ...


# The events that start the release step, with the payload each must carry.
RELEASE_TRIGGERS: dict[str, type[ev.Event]] = {
    ev.ORDER_TIMED_OUT: ev.OrderTimedOut,
    ev.ORDER_CANCEL_REQUESTED: ev.OrderCancelRequested,
}


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


def released(name: str, wanted: ev.Event, product_id: str, quantity: int) -> ev.Event:
    """Inventory's answer to a cancel (INVENTORY_RELEASED): what it gave back or blocked."""
    return ev.make_event(
        name,
        correlation_id=wanted.correlationId,
        orderId=wanted.orderId,
        userId=wanted.userId,
        orderStatus=name,
        productId=product_id,
        productQuantity=quantity,
        totalAmount=wanted.totalAmount,
        currency=wanted.currency,
    )


class InventoryHandlers:
    def __init__(self, repository: Callable[[Any], Reservations], orders: Orders) -> None:
        self.repository = repository  # the repository of a unit of work
        self.orders = orders

    def by_step(self) -> dict[str, Handler]:
        return {"reserve": self.reserve, "release": self.release}

    async def reserve(self, event: ev.Event, ctx: HandlerContext) -> None:
        """Reserve the paid quantity (a conditional UPDATE), or reject it; one reservation row per
        order, written with it and with its answer (INVENTORY_RESERVED or INVENTORY_INSUFFICIENT) in
        one statement. In a batch, the first event locks the reservations of all of them with one
        statement (ADR 70), and each event then sees its order's as the batch left it."""
        paid = ev.typed_as(event, ev.PaymentDone)
        assert paid.orderId and paid.productId and paid.productQuantity  # required by PaymentDone
        async with ctx.transaction() as uow:
            repo = self.repository(uow)
            prior = await self._locked(repo, ctx, paid.orderId)
            if prior is not None:  # domain.reserve: ALREADY
                log.info("order %s already has a reservation (%s); nothing to do", paid.orderId, prior.status)
                return
            answers = {
                RESERVED: reply(ev.INVENTORY_RESERVED, paid),
                REJECTED: reply(
                    ev.INVENTORY_INSUFFICIENT, paid, inventoryFailReason=INVENTORY_NOT_AVAILABLE, isPartialOrder=False
                ),
            }
            status = await repo.reserve(paid.orderId, paid.productId, paid.productQuantity, answers)
            ctx.memo[self.LOCKED][paid.orderId] = Reservation(paid.productId, paid.productQuantity, status)

    LOCKED = "reserve: reservations locked"  # ctx.memo's key: order id -> its reservation, None for none

    async def _locked(self, repo: Reservations, ctx: HandlerContext, order_id: str) -> Reservation | None:
        """The order's reservation, locked for this transaction, as this transaction has it (None:
        none). The first event of a batch to come here locks those of every order of the batch
        not locked yet, in one statement."""
        locked: dict[str, Reservation | None] = ctx.memo.setdefault(self.LOCKED, {})
        if order_id not in locked:
            ids = sorted({i for e in ctx.batch if (i := e.orderId) and i not in locked} | {order_id})
            found = await repo.lock_reservations(ids)
            locked.update({i: found.get(i) for i in ids})
        return locked[order_id]

    async def release(self, event: ev.Event, ctx: HandlerContext) -> None:
        """Compensation of a timeout or a cancel: give back a reservation; if the timeout or cancel
        came first, make sure a late PAYMENT_DONE reserves nothing. Only for an order Order did time
        out or cancel (asked over HTTP, so before the transaction); any other is recorded as handled
        and ignored. A cancel is answered with INVENTORY_RELEASED, staged with the change, once."""
        model = RELEASE_TRIGGERS.get(event.name_canonical)
        if model is None:
            raise ValueError(f"{event.eventName} does not start a release")
        wanted = ev.typed_as(event, model)
        name, order_id = wanted.name_canonical, wanted.orderId
        assert order_id  # required by the payload model
        if not await self.orders.requested(order_id, name):
            log.warning("%s for order %s, which Order did not ask for: ignored", name, order_id)
            async with ctx.transaction():
                return
        async with ctx.transaction() as uow:
            repo = self.repository(uow)
            prior = (await repo.lock_reservations([order_id])).get(order_id)
            decision = release(None if prior is None else prior.status)
            if decision is Release.NOTHING:  # nothing taken, or given back already
                return
            if prior is None:
                product_id, quantity = wanted.productId or "", wanted.productQuantity or 1
            else:
                product_id, quantity = prior.product_id, prior.quantity
            answer_name = release_answer(name, decision)
            answer = None if answer_name is None else released(answer_name, wanted, product_id, quantity)
            if decision is Release.CANCEL:
                await repo.cancel(order_id, product_id, quantity, answer)
            else:
                await repo.give_back(order_id, product_id, quantity, answer)
                log.info("released the reservation of order %s (%s)", order_id, name)


def handlers(repository: Callable[[Any], Reservations], orders: Orders) -> dict[str, Handler]:
    """Inventory's handlers, by step name."""
    return InventoryHandlers(repository, orders).by_step()
