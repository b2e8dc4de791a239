"""Payment's side of the saga: the `charge` step (ORDER_INITIATED, a poll's orders in one wallet
call), the `refund` step (INVENTORY_INSUFFICIENT, or an ORDER_TIMED_OUT or ORDER_CANCEL_REQUESTED
that Order confirms), and the voider (charges whose outcome was unknown, and voids the wallet did
not answer). The rules are in `domain`, the SQL in `repository`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any, Protocol

from tinysaga.contracts import events as ev
from tinysaga.payment import domain
from tinysaga.payment.adapters import Orders, Wallet, WalletUnavailable
from tinysaga.payment.domain import Payment, RefundStep, Status
from tinysaga.platform.consumer import Handler, HandlerContext
from tinysaga.platform.uow import UnitOfWork

log = logging.getLogger("tinysaga.payment")

ALREADY = object()  # what `prepare` gives for an order that has a payment row: it was acted on

# The events that start the refund step, with the payload each must carry.
REFUND_TRIGGERS: dict[str, type[ev.Event]] = {
    ev.INVENTORY_INSUFFICIENT: ev.InventoryInsufficient,
    ev.ORDER_TIMED_OUT: ev.OrderTimedOut,
    ev.ORDER_CANCEL_REQUESTED: ev.OrderCancelRequested,
    ev.REFUND_RETRY_REQUESTED: ev.RefundRetryRequested,
}


class Payments(Protocol):
    """What the handlers need of the payments table (`repository.PaymentRepository`, or a fake)."""

    async def acted_on(self, order_ids: Sequence[str]) -> set[str]: ...

    async def get(self, order_id: str) -> Payment | None: ...

    async def void_pending(self, limit: int = 100) -> list[Payment]: ...

    async def add_charges(self, charges: Sequence[tuple[Payment, ev.Event]]) -> None: ...

    async def add_unless_exists(self, p: Payment, event: ev.Event | None = None) -> None: ...

    async def move(
        self, order_id: str, from_status: Status, to: Status, detail: str, event: ev.Event | None = None
    ) -> bool: ...


def order_initiated(event: ev.Event) -> ev.OrderInitiated:
    """The event as a complete ORDER_INITIATED Payment can charge, or ValueError (dead letter)."""
    order = ev.typed_as(event, ev.OrderInitiated)
    if order.paymentType not in domain.PAYMENT_TYPES:
        raise ValueError(f"unsupported paymentType {order.paymentType!r}")
    return order


def outgoing(name: str, source: ev.Event | Payment, **fields: Any) -> ev.Event:
    """An event of Payment's about an order: the order's fields copied from the event that asked for
    the step (or from the payment row, with the order as correlation id), `fields` on top."""
    if isinstance(source, ev.Event):
        base = {
            "orderId": source.orderId,
            "userId": source.userId,
            "paymentType": source.paymentType,
            "productId": source.productId,
            "productQuantity": source.productQuantity,
            "price": source.price,
            "totalAmount": source.totalAmount,
            "currency": source.currency,
        }
        cid = source.correlationId
    else:
        base = {
            "orderId": source.order_id,
            "userId": source.user_id,
            "totalAmount": source.amount,
            "currency": source.currency,
            "paymentType": "WALLET",
        }
        cid = source.order_id
    return ev.make_event(name, correlation_id=cid, orderStatus=name, **{**base, **fields})


def _status(payment: Payment | None) -> Status | None:
    return None if payment is None else payment.status


async def _handled(ctx: HandlerContext) -> None:
    """Record the event as handled, with nothing else done."""
    async with ctx.transaction():
        pass


class PaymentHandlers:
    """The step handlers, `prepare` (a batch's charges in one query and one wallet call) and the
    voider, on the dependencies given: `repo` the repository of a unit of work, `reader` one for
    reads outside a transaction, `begin` a transaction of its own (not the handled event's)."""

    def __init__(
        self,
        *,
        repo: Callable[[UnitOfWork], Payments],
        reader: Payments,
        begin: Callable[[], AbstractAsyncContextManager[UnitOfWork]],
        wallet: Wallet,
        orders: Orders,
        currency: str,
        void_every: float = 2.0,
    ) -> None:
        self.repo = repo
        self.reader = reader
        self.begin = begin
        self.wallet = wallet
        self.orders = orders
        self.currency = currency
        self.void_every = void_every

    def by_step(self) -> dict[str, Handler]:
        return {"charge": self.charge, "refund": self.refund}

    # ---- charge --------------------------------------------------------------------------------

    async def prepare(self, events: list[ev.Event]) -> dict[Any, Any]:
        """For ORDER_INITIATED events, by eventId: ALREADY for an order acted on before (one query for
        them all), else the wallet's answer for its charge (one call, one wallet transaction, for them
        all), or `{error}` when the wallet could not be reached: that fails them all, as one call would.
        Events that are not valid are left out (their handler raises)."""
        wanted = []
        for e in events:
            try:
                wanted.append(order_initiated(e))
            except ValueError:
                pass
        if not wanted:
            return {}
        done = await self.reader.acted_on([e.orderId for e in wanted])
        out: dict[Any, Any] = {e.eventId: ALREADY for e in wanted if e.orderId in done}
        todo = [e for e in wanted if e.orderId not in done]
        if todo:
            debits = [
                {"orderId": e.orderId, "userId": e.userId, "amount": str(e.totalAmount), "currency": e.currency}
                for e in todo
            ]
            try:
                answers = await self.wallet.debit_many(debits)
            except WalletUnavailable as exc:
                answers = [{"error": str(exc)}] * len(todo)
            out.update({e.eventId: a for e, a in zip(todo, answers, strict=True)})
        return out

    async def charge(self, event: ev.Event, ctx: HandlerContext) -> None:
        """ORDER_INITIATED: the payment row with its outcome (PAYMENT_DONE or PAYMENT_FAIL), written
        with the batch's others by one statement right before its commit (ADR 70). The answer is
        the batch's (`ctx.prepared`), or this order's own when preparing the batch failed."""
        order = order_initiated(event)
        answer = ctx.prepared if ctx.prepared is not None else (await self.prepare([order]))[order.eventId]
        if answer is ALREADY:  # acted on already (a second delivery under another id)
            return await _handled(ctx)
        if "error" in answer:
            log.warning(
                "wallet unavailable for order %s: %s; failing the payment and voiding", order.orderId, answer["error"]
            )
        change = domain.apply(None, domain.charge_answer(answer))
        assert change is not None and change.event is not None
        tx = answer.get("transactionId")
        payment = Payment(order.orderId, order.userId, order.totalAmount, order.currency, change.to, tx)
        out = outgoing(change.event, order, transactionId=tx, failReason=change.fail_reason)
        async with ctx.transaction() as uow:
            charges: list[tuple[Payment, ev.Event]] = ctx.memo.setdefault(self.CHARGES, [])
            if not charges:
                repo = self.repo(uow)
                uow.before_commit(self.CHARGES, lambda: repo.add_charges(charges))
            charges.append((payment, out))

    CHARGES = "charge: rows"  # ctx.memo's key: a batch's payments with their events, added before its commit

    # ---- refund --------------------------------------------------------------------------------

    async def refund(self, event: ev.Event, ctx: HandlerContext) -> None:
        """INVENTORY_INSUFFICIENT, ORDER_TIMED_OUT or ORDER_CANCEL_REQUESTED: give the money back if
        it was taken (a void when the order timed out or was canceled before any charge). The last
        two only once Order confirms it asked for them."""
        model = REFUND_TRIGGERS.get(event.name_canonical)
        if model is None:
            raise ValueError(f"{event.eventName} does not start a refund")
        wanted = ev.typed_as(event, model)
        name = wanted.name_canonical
        requested = name in domain.REQUESTED_BY_ORDER
        if requested and not await self.orders.requested(wanted.orderId, name):
            log.warning("%s for order %s, which Order did not ask for: ignored", name, wanted.orderId)
            return await _handled(ctx)
        retry = name == ev.REFUND_RETRY_REQUESTED
        payment = await self.reader.get(wanted.orderId)
        step = domain.refund_step(_status(payment), requested, retry)
        if step == RefundStep.VOID_FIRST:
            return await self._void_before_charge(wanted, ctx)
        if step == RefundStep.ASK:
            payment = await self._ask_refund(wanted, payment)
            step = domain.refund_step(_status(payment), requested)
        if step == RefundStep.RETRY:
            payment = await self._ask_retry(payment)
            step = domain.refund_step(_status(payment), requested, retry)
        if step == RefundStep.REFUND:
            return await self._refund_at_wallet(wanted, payment, ctx)
        if payment is None:
            log.warning(
                "%s for order %s that was never charged here: nothing to refund", wanted.eventName, wanted.orderId
            )
        await _handled(ctx)  # declined, voided, or already refunded: nothing to give back

    async def _wallet_refund(self, order_id: str, user_id: str, reason: str) -> tuple[str | None, str]:
        """The wallet's status for a refund or void (None when it gave none) and the detail to keep."""
        try:
            status = (await self.wallet.refund(order_id, user_id, reason))["status"]
        except WalletUnavailable as e:
            return None, str(e)
        return status, status

    @staticmethod
    def _refund_fields(wanted: ev.Event, payment: Payment) -> dict[str, Any]:
        return {
            "transactionId": payment.transaction_id,
            "productId": wanted.productId,
            "productQuantity": wanted.productQuantity,
            "isPartialOrder": False,
        }

    async def _void_before_charge(self, wanted: ev.Event, ctx: HandlerContext) -> None:
        """Never charged here, and the saga timed out or the order was canceled: make sure a late
        debit is refused (the voider retries if the wallet is down), and remember it; a cancel is
        answered with the row (PAYMENT_VOIDED, or REFUND_DONE if a debit had landed)."""
        assert wanted.orderId is not None and wanted.userId is not None
        name = wanted.name_canonical
        status, _ = await self._wallet_refund(wanted.orderId, wanted.userId, domain.refund_reason(name))
        change = domain.apply(None, domain.void_answer(status, canceled=domain.is_cancel(name)))
        assert change is not None
        payment = Payment(
            wanted.orderId,
            wanted.userId,
            wanted.totalAmount or Decimal(0),
            wanted.currency or self.currency,
            change.to,
            detail=domain.early_void_detail(name),
        )
        out = None if change.event is None else outgoing(change.event, wanted)
        async with ctx.transaction() as uow:
            await self.repo(uow).add_unless_exists(payment, out)

    async def _ask_refund(self, wanted: ev.Event, payment: Payment | None) -> Payment | None:
        """CHARGED -> REFUND_PENDING with REFUND_INITIATED, in a transaction of its own (so the
        request stands even if the wallet call below fails); the payment as it is now."""
        assert payment is not None
        change = domain.apply(payment.status, domain.Happened.REFUND_WANTED)
        assert change is not None and change.event is not None
        out = outgoing(change.event, payment, **self._refund_fields(wanted, payment))
        async with self.begin() as uow:
            await self.repo(uow).move(
                payment.order_id, payment.status, change.to, domain.refund_reason(wanted.eventName), out
            )
        return await self.reader.get(payment.order_id)

    async def _ask_retry(self, payment: Payment | None) -> Payment | None:
        """REFUND_FAILED -> REFUND_PENDING for an operator's retry, in a transaction of its own (as
        `_ask_refund`); the payment as it is now."""
        assert payment is not None
        change = domain.apply(payment.status, domain.Happened.REFUND_RETRY_WANTED)
        assert change is not None
        async with self.begin() as uow:
            await self.repo(uow).move(payment.order_id, payment.status, change.to, domain.RETRY_REASON)
        log.info("refund of order %s retried by an operator", payment.order_id)
        return await self.reader.get(payment.order_id)

    async def _refund_at_wallet(self, wanted: ev.Event, payment: Payment | None, ctx: HandlerContext) -> None:
        """REFUND_PENDING -> REFUNDED (REFUND_DONE) or REFUND_FAILED (REFUND_FAILED, an alert) on the
        wallet's answer."""
        assert payment is not None
        status, detail = await self._wallet_refund(
            payment.order_id, payment.user_id, domain.refund_reason(wanted.eventName)
        )
        change = domain.apply(payment.status, domain.refund_answer(status))
        assert change is not None and change.event is not None
        out = outgoing(
            change.event, payment, failReason=domain.fail_reason(change, detail), **self._refund_fields(wanted, payment)
        )
        async with ctx.transaction() as uow:
            moved = await self.repo(uow).move(
                payment.order_id, payment.status, change.to, detail[: domain.DETAIL_MAX], out
            )
            if moved and change.to == Status.REFUND_FAILED:
                log.error(
                    "ALERT refund failed for order %s: %s",
                    payment.order_id,
                    detail,
                    extra={"alert": "REFUND_FAILED", "orderId": payment.order_id},
                )

    # ---- voider --------------------------------------------------------------------------------

    async def void_pending(self) -> int:
        """Payments whose debit outcome was unknown: void them at the wallet (refund if it landed,
        with REFUND_DONE, or record that nothing was taken so that a late debit is refused; a
        canceled order's void is answered with PAYMENT_VOIDED then). Stops at the first the wallet
        does not answer; the number voided."""
        done = 0
        for p in await self.reader.void_pending():
            status, _ = await self._wallet_refund(p.order_id, p.user_id, domain.voider_reason(p))
            if status is None:
                return done
            change = domain.apply(p.status, domain.void_answer(status, canceled=domain.voided_for_cancel(p)))
            assert change is not None
            out = None if change.event is None else outgoing(change.event, p)
            async with self.begin() as uow:
                await self.repo(uow).move(p.order_id, p.status, change.to, domain.void_detail(status), out)
            done += 1
        return done

    def voider(self):  # noqa: ANN201 - a task factory
        async def payment_voider() -> None:
            while True:
                await self.void_pending()
                await asyncio.sleep(self.void_every)

        return payment_voider
