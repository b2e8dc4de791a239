"""Order's side of the saga: apply events to the state machine, and fail sagas past their deadline."""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg
from prometheus_client import Counter

from tinysaga.contracts import events as ev
from tinysaga.order import domain
from tinysaga.platform.consumer import Handler, HandlerContext
from tinysaga.platform.db import add_to_outbox
from tinysaga.platform.service import Runtime

log = logging.getLogger("tinysaga.order")

STATUS_CHANNEL = "tinysaga_order_status"
REFUND_FAILED_ALERTS = Counter("tinysaga_refund_failed_total", "orders whose refund failed (critical)")
TRANSITIONS = Counter("tinysaga_order_transitions_total", "order status changes", ["to"])
IGNORED = Counter("tinysaga_order_events_ignored_total", "stale or duplicate events left without effect", ["event"])


def state_of(row: asyncpg.Record) -> domain.OrderState:
    return domain.OrderState(
        status=domain.Status(row["order_status"]),
        fail_reason=domain.FailReason(row["fail_reason"]) if row["fail_reason"] else None,
        refund_status=domain.Refund(row["refund_status"]) if row["refund_status"] else None,
        status_info=row["status_info"],
        transaction_id=row["transaction_id"],
    )


async def save_change(conn: asyncpg.Connection, row: asyncpg.Record, new: domain.OrderState, event_name: str) -> None:
    """Persist a transition with its history row; NOTIFY live streams at commit (one statement)."""
    await conn.execute(
        "WITH u AS (UPDATE orders SET order_status=$2, fail_reason=$3, refund_status=$4, status_info=$5,"
        " transaction_id=$6, version = version + 1, updated_at = clock_timestamp() WHERE order_id=$1"
        " RETURNING order_id),"
        " h AS (INSERT INTO order_history(order_id, order_status, status_info, event_name)"
        " SELECT order_id, $2, $5, $7 FROM u)"
        " SELECT pg_notify($8, order_id::text) FROM u",
        row["order_id"],
        new.status,
        new.fail_reason,
        new.refund_status,
        new.status_info,
        new.transaction_id,
        event_name,
        STATUS_CHANNEL,
    )
    TRANSITIONS.labels(new.status).inc()
    if new.refund_status == domain.Refund.REFUND_FAILED:
        await conn.execute(
            "INSERT INTO alerts(order_id, user_id, kind, detail) VALUES ($1,$2,'REFUND_FAILED',$3)"
            " ON CONFLICT DO NOTHING",
            row["order_id"],
            row["user_id"],
            f"refund of {row['total_amount']} {row['currency']} failed; the user was charged for nothing",
        )
        REFUND_FAILED_ALERTS.inc()
        log.error(
            "ALERT refund failed for order %s (user %s, %s %s): an operator must refund it",
            row["order_id"],
            row["user_id"],
            row["total_amount"],
            row["currency"],
            extra={"alert": "REFUND_FAILED", "orderId": str(row["order_id"])},
        )


def handlers(rt: Runtime) -> dict[str, Handler]:
    async def on_saga_event(event: ev.Event, ctx: HandlerContext) -> None:
        if not event.orderId:
            raise ValueError(f"{event.eventName} without orderId")
        try:
            order_id = uuid.UUID(event.orderId)
        except ValueError:
            order_id = None
        async with ctx.transaction() as conn:
            row = None
            if order_id is not None:
                row = await conn.fetchrow("SELECT * FROM orders WHERE order_id=$1 FOR UPDATE", order_id)
            if row is None:
                log.warning("event %s for unknown order %s ignored", event.eventName, event.orderId)
                IGNORED.labels(event.name_canonical).inc()
                return
            new = domain.apply(
                state_of(row),
                domain.Input(event.name_canonical, event.failReason, event.transactionId),
            )
            if new is None:
                log.info(
                    "event %s left order %s in %s (stale or duplicate)",
                    event.eventName,
                    event.orderId,
                    row["order_status"],
                )
                IGNORED.labels(event.name_canonical).inc()
                return
            await save_change(conn, row, new, event.name_canonical)

    return {n: on_saga_event for n in ev.STEP_OUTCOMES}


async def sweep_once(rt: Runtime, limit: int = 100) -> int:
    """Fail the in-flight sagas past their deadline and ask for compensation (ORDER_TIMED_OUT).
    SKIP LOCKED and the status condition make several sweepers (one per replica) safe."""
    async with rt.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT * FROM orders WHERE order_status = ANY($1::text[]) AND deadline_at < clock_timestamp()"
            " ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            [s.value for s in domain.IN_FLIGHT],
            limit,
        )
        for row in rows:
            new = domain.apply(state_of(row), domain.Input(domain.TIMEOUT))
            if new is None:
                continue
            await save_change(conn, row, new, ev.ORDER_TIMED_OUT)
            await add_to_outbox(
                conn,
                rt.settings.topic,
                ev.new_event(
                    ev.ORDER_TIMED_OUT,
                    correlation_id=str(row["order_id"]),
                    orderId=str(row["order_id"]),
                    userId=row["user_id"],
                    orderStatus=new.status,
                    paymentType=row["payment_type"],
                    productId=row["product_id"],
                    productQuantity=row["product_quantity"],
                    price=row["price"],
                    totalAmount=row["total_amount"],
                    currency=row["currency"],
                    transactionId=row["transaction_id"],
                    failReason=new.fail_reason,
                ),
            )
            log.warning("order %s timed out in %s; compensating", row["order_id"], row["order_status"])
    return len(rows)


def sweeper(rt: Runtime):  # noqa: ANN201 - a task factory
    async def saga_sweeper() -> None:
        while True:
            while await sweep_once(rt) > 0:
                pass
            await asyncio.sleep(rt.settings.sweeper_interval_seconds)

    return saga_sweeper
