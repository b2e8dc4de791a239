"""Payment's side of the saga: charge on ORDER_INITIATED, refund on INVENTORY_INSUFFICIENT or
ORDER_TIMED_OUT, and void charges whose outcome was unknown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from tinysaga.contracts import events as ev
from tinysaga.payment.adapters import WalletClient, WalletUnavailable
from tinysaga.platform.calls import order_timed_out
from tinysaga.platform.consumer import Handler, HandlerContext, Prepare
from tinysaga.platform.db import add_to_outbox, outbox_values, with_outbox
from tinysaga.platform.service import Runtime

log = logging.getLogger("tinysaga.payment")

CHARGED, DECLINED, VOID_PENDING, VOIDED = "CHARGED", "DECLINED", "VOID_PENDING", "VOIDED"
REFUND_PENDING, REFUNDED, REFUND_FAILED = "REFUND_PENDING", "REFUNDED", "REFUND_FAILED"


def _event(name: str, src: ev.Event | asyncpg.Record, **fields: Any) -> ev.Event:
    if isinstance(src, ev.Event):
        base = {
            "orderId": src.orderId,
            "userId": src.userId,
            "paymentType": src.paymentType,
            "productId": src.productId,
            "productQuantity": src.productQuantity,
            "price": src.price,
            "totalAmount": src.totalAmount,
            "currency": src.currency,
        }
        cid = src.correlationId
    else:
        base = {
            "orderId": src["order_id"],
            "userId": src["user_id"],
            "totalAmount": src["amount"],
            "currency": src["currency"],
            "paymentType": "WALLET",
        }
        cid = src["order_id"]
    return ev.new_event(name, correlation_id=cid, orderStatus=name, **{**base, **fields})


ALREADY = object()  # a payment row exists: the order was acted on


def check_order_initiated(event: ev.Event) -> None:
    if not (event.orderId and event.userId and event.totalAmount is not None):
        raise ValueError("ORDER_INITIATED without orderId, userId or totalAmount")
    if event.paymentType not in (None, "WALLET"):
        raise ValueError(f"unsupported paymentType {event.paymentType!r}")


async def charge(rt: Runtime, wallet: WalletClient, events: list[ev.Event]) -> dict[Any, Any]:
    """For ORDER_INITIATED events, by eventId: ALREADY for an order acted on before (one query for
    them all), else the wallet's answer for its charge (one call, one wallet transaction, for them
    all), or `{error}` when the wallet could not be reached: that fails them all, as one call would.
    Events that are not valid are left out (their handler raises)."""
    wanted = []
    for e in events:
        try:
            check_order_initiated(e)
            wanted.append(e)
        except ValueError:
            pass
    if not wanted:
        return {}
    done = {
        r["order_id"]
        for r in await rt.pool.fetch(
            "SELECT order_id FROM payments WHERE order_id = ANY($1::text[])", [e.orderId for e in wanted]
        )
    }
    out: dict[Any, Any] = {e.eventId: ALREADY for e in wanted if e.orderId in done}
    todo = [e for e in wanted if e.orderId not in done]
    if todo:
        debits = [
            {
                "orderId": e.orderId,
                "userId": e.userId,
                "amount": str(e.totalAmount),
                "currency": e.currency or rt.settings.currency,
            }
            for e in todo
        ]
        try:
            results = await wallet.debit_many(debits)
        except WalletUnavailable as e:
            results = [{"error": str(e)}] * len(todo)
        out.update({e.eventId: r for e, r in zip(todo, results, strict=True)})
    return out


def charge_batch(rt: Runtime, wallet: WalletClient) -> Prepare:
    """The consumer's `prepare` for a batch of ORDER_INITIATED: `charge` once for them all."""

    async def prepare(events: list[ev.Event]) -> dict[Any, Any]:
        return await charge(rt, wallet, events)

    return prepare


def handlers(rt: Runtime, wallet: WalletClient) -> dict[str, Handler]:
    topic = rt.settings.topic

    async def on_order_initiated(event: ev.Event, ctx: HandlerContext) -> None:
        check_order_initiated(event)
        # the batch's charge for this order; charged on its own only if preparing the batch failed
        result = ctx.prepared if ctx.prepared is not None else (await charge(rt, wallet, [event]))[event.eventId]
        if result is ALREADY:
            async with ctx.transaction():
                return  # already acted on (a second delivery under another id)
        status = result.get("status")
        if "error" in result:
            log.warning(
                "wallet unavailable for order %s: %s; failing the payment and voiding", event.orderId, result["error"]
            )
        async with ctx.transaction() as conn:
            if status == "COMPLETED":
                row_status, out = CHARGED, _event(ev.PAYMENT_DONE, event, transactionId=result["transactionId"])
            elif status == "FAILED":
                row_status = DECLINED
                out = _event(
                    ev.PAYMENT_FAIL, event, transactionId=result["transactionId"], failReason=ev.INSUFFICIENT_FUND
                )
            elif status == "REFUSED":  # the order was voided first (it timed out): nothing was taken
                row_status, out = VOIDED, _event(ev.PAYMENT_FAIL, event, failReason=ev.SERVER_ERROR)
            else:
                row_status, out = VOID_PENDING, _event(ev.PAYMENT_FAIL, event, failReason=ev.SERVER_ERROR)
            await conn.execute(  # the payment row and its outcome event, one statement
                with_outbox(
                    "INSERT INTO payments(order_id, user_id, amount, currency, status, transaction_id)"
                    " VALUES ($1,$2,$3,$4,$5,$6) RETURNING 1",
                    7,
                ),
                event.orderId,
                event.userId,
                event.totalAmount,
                event.currency or rt.settings.currency,
                row_status,
                result.get("transactionId"),
                *outbox_values(topic, out),
            )

    async def on_refund_wanted(event: ev.Event, ctx: HandlerContext) -> None:
        """INVENTORY_INSUFFICIENT or ORDER_TIMED_OUT: give the money back if it was taken."""
        if not event.orderId:
            raise ValueError(f"{event.eventName} without orderId")
        reason = "out of stock" if event.name_canonical == ev.INVENTORY_INSUFFICIENT else "order timed out"
        if event.name_canonical == ev.ORDER_TIMED_OUT and not await order_timed_out(rt, event.orderId):
            log.warning("ORDER_TIMED_OUT for order %s, which Order did not time out: ignored", event.orderId)
            async with ctx.transaction():
                return
        row = await rt.pool.fetchrow("SELECT * FROM payments WHERE order_id=$1", event.orderId)
        if row is None:
            if event.name_canonical == ev.ORDER_TIMED_OUT and event.userId:
                # Never charged here: make sure a late debit is refused (the voider retries if the
                # wallet is down), and remember it.
                try:
                    await wallet.refund(event.orderId, event.userId, reason)
                    status = VOIDED
                except WalletUnavailable:
                    status = VOID_PENDING
                async with ctx.transaction() as conn:
                    await conn.execute(
                        "INSERT INTO payments(order_id, user_id, amount, currency, status, detail)"
                        " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING",
                        event.orderId,
                        event.userId,
                        event.totalAmount or 0,
                        event.currency or rt.settings.currency,
                        status,
                        "voided before any charge: the saga timed out",
                    )
                return
            log.warning(
                "%s for order %s that was never charged here: nothing to refund", event.eventName, event.orderId
            )
            async with ctx.transaction():
                return
        if row["status"] == CHARGED:
            async with rt.pool.acquire() as conn, conn.transaction():
                changed = await conn.fetchval(
                    "UPDATE payments SET status=$2, detail=$3, updated_at=now() WHERE order_id=$1 AND status=$4"
                    " RETURNING 1",
                    event.orderId,
                    REFUND_PENDING,
                    reason,
                    CHARGED,
                )
                if changed:
                    await add_to_outbox(
                        conn,
                        topic,
                        _event(
                            ev.REFUND_INITIATED,
                            row,
                            transactionId=row["transaction_id"],
                            productId=event.productId,
                            productQuantity=event.productQuantity,
                            isPartialOrder=False,
                        ),
                    )
            row = await rt.pool.fetchrow("SELECT * FROM payments WHERE order_id=$1", event.orderId)
        if row["status"] != REFUND_PENDING:
            async with ctx.transaction():
                return  # declined, voided, or already refunded: nothing to give back
        try:
            result = await wallet.refund(event.orderId, row["user_id"], reason)
            ok, detail = result["status"] in ("REFUNDED", "NOTHING_TO_REFUND"), result["status"]
        except WalletUnavailable as e:
            ok, detail = False, str(e)
        async with ctx.transaction() as conn:
            done = await conn.fetchval(
                "UPDATE payments SET status=$2, detail=$3, updated_at=now() WHERE order_id=$1 AND status=$4"
                " RETURNING 1",
                event.orderId,
                REFUNDED if ok else REFUND_FAILED,
                detail[:500],
                REFUND_PENDING,
            )
            if done:
                common = {
                    "transactionId": row["transaction_id"],
                    "productId": event.productId,
                    "productQuantity": event.productQuantity,
                    "isPartialOrder": False,
                }
                if ok:
                    await add_to_outbox(conn, topic, _event(ev.REFUND_DONE, row, **common))
                else:
                    log.error(
                        "ALERT refund failed for order %s: %s",
                        event.orderId,
                        detail,
                        extra={"alert": "REFUND_FAILED", "orderId": event.orderId},
                    )
                    await add_to_outbox(conn, topic, _event(ev.REFUND_FAILED, row, failReason=detail[:200], **common))

    return {
        ev.ORDER_INITIATED: on_order_initiated,
        ev.INVENTORY_INSUFFICIENT: on_refund_wanted,
        ev.ORDER_TIMED_OUT: on_refund_wanted,
    }


async def void_pending(rt: Runtime, wallet: WalletClient) -> int:
    """Payments whose debit outcome was unknown: void them at the wallet (refund if it landed,
    or record that nothing was taken so that a late debit is refused)."""
    rows = await rt.pool.fetch("SELECT * FROM payments WHERE status=$1 ORDER BY updated_at LIMIT 100", VOID_PENDING)
    done = 0
    for row in rows:
        try:
            result = await wallet.refund(row["order_id"], row["user_id"], "void after a payment error")
        except WalletUnavailable:
            return done
        async with rt.pool.acquire() as conn, conn.transaction():
            changed = await conn.fetchval(
                "UPDATE payments SET status=$2, detail=$3, updated_at=now()"
                " WHERE order_id=$1 AND status=$4 RETURNING 1",
                row["order_id"],
                VOIDED,
                f"void: {result['status']}",
                VOID_PENDING,
            )
            if changed and result["status"] == "REFUNDED":
                await add_to_outbox(conn, rt.settings.topic, _event(ev.REFUND_DONE, row))
        done += 1
    return done


def voider(rt: Runtime, wallet: WalletClient):  # noqa: ANN201 - a task factory
    async def payment_voider() -> None:
        while True:
            await void_pending(rt, wallet)
            await asyncio.sleep(2.0)

    return payment_voider
