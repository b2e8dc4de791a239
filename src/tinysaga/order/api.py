"""Order routes: checkout quote, order creation (early fail, idempotency), reads, live status (SSE),
and the operator's views (recent sagas, alerts)."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from tinysaga.contracts import events as ev
from tinysaga.order import domain
from tinysaga.order.adapters import fetch_balance, fetch_product, order_json
from tinysaga.order.handlers import STATUS_CHANNEL
from tinysaga.platform.db import OUTBOX_CHANNEL, OUTBOX_INSERT, outbox_values
from tinysaga.platform.idempotency import check_key, request_hash, reused_with_other_body
from tinysaga.platform.money import as_number, money
from tinysaga.platform.service import Runtime
from tinysaga.platform.service import runtime as _rt
from tinysaga.platform.web import JSON, Identity, Problem, admin_user, current_user

log = logging.getLogger("tinysaga.order")
router = APIRouter()

ProductIdStr = Field(min_length=1, max_length=64)


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    productId: str = ProductIdStr
    productQuantity: StrictInt = Field(ge=1, le=100)
    paymentType: Literal["WALLET"]


def _parse_order_id(order_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(order_id)
    except ValueError as e:
        raise Problem(404, "Not Found", "no such order") from e


async def _own_order(rt: Runtime, user: Identity, order_id: str) -> asyncpg.Record:
    row = await rt.pool.fetchrow("SELECT * FROM orders WHERE order_id=$1", _parse_order_id(order_id))
    if row is None or row["user_id"] != user.user_id:
        raise Problem(404, "Not Found", "no such order")
    return row


@router.get("/api/checkout/quote")
async def quote(
    request: Request,
    productId: str = Query(..., min_length=1, max_length=64),
    quantity: int = Query(1, ge=1, le=100),
    user: Identity = Depends(current_user),
) -> dict[str, Any]:
    rt = _rt(request)
    product, wallet = await asyncio.gather(fetch_product(rt, productId), fetch_balance(rt, user.user_id))
    unit = money(str(product["price"]))
    total = money(unit * quantity)
    balance = money(str(wallet["balance"]))
    mode: dict[str, Any] = {"type": "WALLET", "enabled": balance >= total}
    if balance < total:
        mode["reason"] = "INSUFFICIENT_FUNDS"
    return {
        "productId": productId,
        "quantity": quantity,
        "unitPrice": as_number(unit),
        "totalAmount": as_number(total),
        "currency": rt.settings.currency,
        "inStock": product["availableCount"] >= quantity,
        "availableCount": product["availableCount"],
        "walletBalance": as_number(balance),
        "paymentModes": [mode],
    }


@router.post("/api/orders", status_code=202)
async def create_order(
    body: OrderIn,
    request: Request,
    user: Identity = Depends(current_user),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSON:
    rt = _rt(request)
    key = check_key(idempotency_key)
    digest = request_hash(body.model_dump()) if key else None
    if key:
        prior = await rt.pool.fetchrow(
            "SELECT * FROM orders WHERE user_id=$1 AND idempotency_key=$2", user.user_id, key
        )
        if prior is not None:
            return _accepted(prior, digest)
    product = await fetch_product(rt, body.productId)
    if product["availableCount"] < body.productQuantity:
        raise Problem(
            409,
            "Conflict",
            f"only {product['availableCount']} of {body.productId!r} in stock; no order was created",
            type_="urn:tinysaga:problem:out-of-stock",
        )
    price = money(str(product["price"]))
    total = money(price * body.productQuantity)
    order_id = uuid.uuid4()
    deadline = datetime.now(UTC) + timedelta(seconds=rt.settings.saga_timeout_seconds)
    info = "order received; taking payment"
    event = ev.new_event(
        ev.ORDER_INITIATED,
        correlation_id=str(order_id),
        orderId=str(order_id),
        userId=user.user_id,
        orderStatus=domain.Status.INITIATED,
        paymentType=body.paymentType,
        productId=body.productId,
        productQuantity=body.productQuantity,
        price=price,
        totalAmount=total,
        currency=rt.settings.currency,
    )
    topic, okey, _, payload, headers = outbox_values(rt.settings.topic, event)
    async with rt.pool.acquire() as conn:
        try:
            # The order, its first history row and ORDER_INITIATED in the outbox (with the NOTIFY
            # that wakes the relay at commit): one statement, so one implicit transaction and one
            # round trip instead of BEGIN, three statements and COMMIT.
            row = await conn.fetchrow(
                "WITH o AS (INSERT INTO orders(order_id, user_id, product_id, product_quantity, price, total_amount,"
                " currency, payment_type, order_status, status_info, idempotency_key, request_hash, deadline_at)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'INITIATED',$9,$10,$11,$12) RETURNING *),"
                " h AS (INSERT INTO order_history(order_id, order_status, status_info, event_name, at)"
                " SELECT order_id, 'INITIATED', status_info, $13, created_at FROM o),"
                f" x AS ({OUTBOX_INSERT} SELECT $14, $15, $13, $16, $17 FROM o)"
                f" SELECT o.*, pg_notify('{OUTBOX_CHANNEL}', '') FROM o",
                order_id,
                user.user_id,
                body.productId,
                body.productQuantity,
                price,
                total,
                rt.settings.currency,
                body.paymentType,
                info,
                key,
                digest,
                deadline,
                ev.ORDER_INITIATED,
                topic,
                okey,
                payload,
                headers,
            )
        except asyncpg.UniqueViolationError:
            # the same Idempotency-Key raced in twice: the first one won
            prior = await conn.fetchrow(
                "SELECT * FROM orders WHERE user_id=$1 AND idempotency_key=$2", user.user_id, key
            )
            return _accepted(prior, digest)
    log.info("order %s initiated", order_id, extra={"orderId": str(order_id)})
    return _accepted(row, digest)


def _accepted(row: asyncpg.Record, digest: str | None) -> JSON:
    if row["request_hash"] != digest:
        raise reused_with_other_body()
    return JSON(order_json(row), status_code=202, headers={"Location": f"/api/orders/{row['order_id']}"})


def _cursor_encode(row: asyncpg.Record) -> str:
    raw = orjson.dumps([row["created_at"].isoformat(), str(row["order_id"])])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, oid = orjson.loads(raw)
        return datetime.fromisoformat(at), uuid.UUID(oid)
    except Exception as e:
        raise Problem(
            422,
            "Unprocessable Content",
            "invalid cursor",
            errors=[{"field": "cursor", "message": "not a cursor this API gave out", "type": "value_error"}],
        ) from e


@router.get("/api/orders")
async def list_orders(
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, max_length=200),
    user: Identity = Depends(current_user),
) -> JSON:
    rt = _rt(request)
    if cursor:
        at, oid = _cursor_decode(cursor)
        rows = await rt.pool.fetch(
            "SELECT * FROM orders WHERE user_id=$1 AND (created_at, order_id) < ($2, $3)"
            " ORDER BY created_at DESC, order_id DESC LIMIT $4",
            user.user_id,
            at,
            oid,
            limit + 1,
        )
    else:
        rows = await rt.pool.fetch(
            "SELECT * FROM orders WHERE user_id=$1 ORDER BY created_at DESC, order_id DESC LIMIT $2",
            user.user_id,
            limit + 1,
        )
    headers = {}
    if len(rows) > limit:
        rows = rows[:limit]
        headers["X-Next-Cursor"] = _cursor_encode(rows[-1])
    return JSON([order_json(r) for r in rows], headers=headers)


@router.get("/api/orders/{order_id}")
async def get_order(order_id: str, request: Request, user: Identity = Depends(current_user)) -> dict[str, Any]:
    return order_json(await _own_order(_rt(request), user, order_id))


@router.get("/api/orders/{order_id}/history")
async def order_history(
    order_id: str, request: Request, user: Identity = Depends(current_user)
) -> list[dict[str, Any]]:
    rt = _rt(request)
    row = await _own_order(rt, user, order_id)
    rows = await rt.pool.fetch(
        "SELECT order_status, status_info, event_name, at FROM order_history WHERE order_id=$1 ORDER BY id",
        row["order_id"],
    )
    return [
        {
            "orderStatus": r["order_status"],
            "statusInfo": r["status_info"],
            "eventName": r["event_name"],
            "at": r["at"].isoformat(),
        }
        for r in rows
    ]


# ---- live status over Server-Sent Events ---------------------------------------------------------


class StatusFanout:
    """One LISTEN connection per process; wakes the streams waiting on an order."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for w in self.waiters.get(payload, ()):
            w.set()

    async def run(self, rt: Runtime) -> None:
        conn = await asyncpg.connect(rt.dsn)
        try:
            await conn.add_listener(STATUS_CHANNEL, self._on_notify)
            while not conn.is_closed():
                await asyncio.sleep(5)
                await conn.execute("SELECT 1")
        finally:
            await conn.close()
            for ws in self.waiters.values():  # a reconnecting stream re-reads the order
                for w in ws:
                    w.set()


@router.get("/api/orders/{order_id}/events")
async def order_events(
    order_id: str,
    request: Request,
    user: Identity = Depends(current_user),
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
) -> EventSourceResponse:
    rt = _rt(request)
    row = await _own_order(rt, user, order_id)
    key = str(row["order_id"])
    fanout: StatusFanout = rt.state["fanout"]
    try:
        last_seen = int(last_event_id) if last_event_id else 0
    except ValueError:
        last_seen = 0

    async def stream() -> Any:
        nonlocal last_seen
        wake = asyncio.Event()
        fanout.waiters[key].add(wake)
        try:
            while True:
                wake.clear()
                current = await rt.pool.fetchrow("SELECT * FROM orders WHERE order_id=$1", row["order_id"])
                if current["version"] > last_seen:
                    last_seen = current["version"]
                    yield ServerSentEvent(
                        data=orjson.dumps(order_json(current), default=float).decode(),
                        event="order-status",
                        id=str(current["version"]),
                    )
                if current["order_status"] in domain.TERMINAL and current["refund_status"] != "REFUND_INITIATED":
                    return  # ended, and no refund still on its way
                try:
                    await asyncio.wait_for(wake.wait(), 15)
                except TimeoutError:
                    pass
        finally:
            fanout.waiters[key].discard(wake)
            if not fanout.waiters[key]:
                fanout.waiters.pop(key, None)

    return EventSourceResponse(stream(), ping=10, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# ---- operator views -------------------------------------------------------------------------------


@router.get("/internal/orders/{order_id}/timed-out")
async def timed_out(order_id: str, request: Request) -> dict[str, Any]:
    """For Payment and Inventory, before they compensate an ORDER_TIMED_OUT: did the sweeper time
    this order out (its history holds the timeout)? 404 for an order that does not exist."""
    rt = _rt(request)
    oid = _parse_order_id(order_id)
    found = await rt.pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM order_history WHERE order_id=$1 AND event_name=$2) FROM orders WHERE order_id=$1",
        oid,
        ev.ORDER_TIMED_OUT,
    )
    if found is None:
        raise Problem(404, "Not Found", "no such order")
    return {"orderId": str(oid), "timedOut": found}


@router.get("/api/admin/sagas")
async def recent_sagas(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    status: str | None = Query(None, max_length=30),
    _: Identity = Depends(admin_user),
) -> list[dict[str, Any]]:
    rt = _rt(request)
    rows = await rt.pool.fetch(
        "SELECT * FROM orders WHERE ($1::text IS NULL OR order_status=$1) ORDER BY created_at DESC LIMIT $2",
        status,
        limit,
    )
    hist = await rt.pool.fetch(
        "SELECT order_id, order_status, event_name, at FROM order_history WHERE order_id = ANY($1::uuid[]) ORDER BY id",
        [r["order_id"] for r in rows],
    )
    steps: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for h in hist:
        steps[h["order_id"]].append(
            {"orderStatus": h["order_status"], "eventName": h["event_name"], "at": h["at"].isoformat()}
        )
    return [{**order_json(r), "steps": steps[r["order_id"]]} for r in rows]


@router.get("/api/admin/alerts")
async def alerts(request: Request, _: Identity = Depends(admin_user)) -> list[dict[str, Any]]:
    rows = await _rt(request).pool.fetch("SELECT * FROM alerts ORDER BY created_at DESC LIMIT 500")
    return [
        {
            "orderId": str(r["order_id"]),
            "userId": r["user_id"],
            "kind": r["kind"],
            "detail": r["detail"],
            "createdAt": r["created_at"].isoformat(),
        }
        for r in rows
    ]
