"""Order routes: checkout quote, order creation (early fail, idempotency), cancel, reads, live status
(SSE), the saga map (the declared saga, and where one order is in it), the admin's ship and
deliver, and the operator's views (recent sagas, alerts)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from tinysaga.contracts import records, routes, saga
from tinysaga.order import domain, saga_map
from tinysaga.order.bootstrap import deps
from tinysaga.order.handlers import OrderRequest, turned_away
from tinysaga.order.repository import OrderRepository, Row
from tinysaga.platform.idempotency import check_key, request_hash, reused_with_other_body
from tinysaga.platform.money import as_number
from tinysaga.platform.web import (
    JSON,
    Identity,
    Problem,
    admin_user,
    current_user,
    problem_response,
    uuid_in_path,
)

router = APIRouter()

ProductIdStr = Field(min_length=1, max_length=64)


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    productId: str = ProductIdStr
    productQuantity: StrictInt = Field(ge=1, le=100)
    paymentType: Literal["WALLET"]


def order_json(r: Row) -> dict[str, Any]:
    return {
        "orderId": str(r["order_id"]),
        "userId": r["user_id"],
        "productId": r["product_id"],
        "productQuantity": r["product_quantity"],
        "price": as_number(r["price"]),
        "totalAmount": as_number(r["total_amount"]),
        "currency": r["currency"],
        "paymentType": r["payment_type"],
        "orderStatus": r["order_status"],
        "failReason": r["fail_reason"],
        "refundStatus": r["refund_status"],
        "statusInfo": r["status_info"],
        "transactionId": r["transaction_id"],
        "createdAt": r["created_at"].isoformat(),
        "updatedAt": r["updated_at"].isoformat(),
    }


def admin_order_json(r: Row) -> dict[str, Any]:
    """The order as the admin sees it: with the id of its trace (null when it was not traced, ADR 42)."""
    return {**order_json(r), "traceId": r["trace_id"]}


def _parse_order_id(order_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(order_id)
    except ValueError as e:
        raise Problem(404, "Not Found", "no such order") from e


async def _own_order(orders: OrderRepository, user: Identity, order_id: str) -> Row:
    row = await orders.get(_parse_order_id(order_id))
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
    d = deps(request)
    product, balance = await asyncio.gather(d.catalogue.product(productId), d.wallets.balance(user.user_id))
    total = domain.total(product.price, quantity)
    enabled = domain.can_pay(balance, total)
    mode: dict[str, Any] = {"type": "WALLET", "enabled": enabled}
    if not enabled:
        mode["reason"] = "INSUFFICIENT_FUNDS"
    return {
        "productId": productId,
        "quantity": quantity,
        "unitPrice": as_number(product.price),
        "totalAmount": as_number(total),
        "currency": d.currency,
        "inStock": domain.in_stock(product.available_count, quantity),
        "availableCount": product.available_count,
        "walletBalance": as_number(balance),
        "paymentModes": [mode],
    }


def overloaded(e: domain.Overloaded) -> Problem:
    """The answer to a new order turned away, with the limit that did it for a client (or the bench)
    to tell apart without reading the detail: `bound` (that many in flight) or `wait` (a new one
    would wait `expectedWaitSeconds`)."""
    extensions: dict[str, object] = {"limit": e.limit, "inFlight": e.in_flight}
    if e.wait is not None:
        extensions["expectedWaitSeconds"] = round(e.wait, 2)
    return Problem(
        503,
        "Service Unavailable",
        f"{e}; no order was created, try again shortly",
        type_="urn:tinysaga:problem:overloaded",
        headers={"Retry-After": str(e.retry_after)},
        extensions=extensions,
    )


class TurnAwayEarly:
    """A new order the bound on sagas in flight turns away is answered here, ahead of the framework
    (ADR 73): past the stack's capacity most requests are turned away, and through FastAPI's routing
    and dependencies each cost Order about 1 ms of CPU, taken from the sagas it had accepted. The
    answer is the route's (503, Retry-After) and so is the decision (`InFlightBound.refusal`). The
    route answers what it answered before: a request with an Idempotency-Key (a retry of an order
    already accepted gets that order, bound or not), one without the gateway's user (401), and one
    whose body it would refuse (400, 422), read here and handed on as it came."""

    PATH = "/api/orders"
    MAX_BODY = 65536  # a longer body goes on to the route, which has the limit

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.PATH:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        d = scope["app"].state.rt.deps
        if b"idempotency-key" in headers or not headers.get(b"x-user-id") or d is None:
            return await self.app(scope, receive, send)
        refused = await d.create_order.bound.refusal()
        if refused is None:
            return await self.app(scope, receive, send)
        body, more = await _read_body(receive, self.MAX_BODY)
        if more or not _valid_order(body):
            return await self.app(scope, _replayed(body, more, receive), send)
        turned_away(refused)
        await problem_response(overloaded(refused))(scope, receive, send)


async def _read_body(receive: Any, limit: int) -> tuple[bytes, bool]:
    """The request's body, up to about `limit` bytes; and whether more is left to receive."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    return b"".join(chunks), more


def _replayed(body: bytes, more: bool, receive: Any) -> Any:
    """`receive` with what was already read of the body given first."""
    given = False

    async def again() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return again


def _valid_order(body: bytes) -> bool:
    """Would the route take this body (FastAPI: JSON, then the model)?"""
    try:
        OrderIn.model_validate(json.loads(body))
    except ValueError:  # json's JSONDecodeError and pydantic's ValidationError are ValueErrors
        return False
    return True


@router.post("/api/orders", status_code=202)
async def create_order(
    body: OrderIn,
    request: Request,
    user: Identity = Depends(current_user),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSON:
    key = check_key(idempotency_key)
    digest = request_hash(body.model_dump()) if key else None
    try:
        row = await deps(request).create_order(
            user.user_id, body.productId, body.productQuantity, body.paymentType, key, digest
        )
    except domain.OutOfStock as e:
        raise Problem(
            409,
            "Conflict",
            f"only {e.available} of {body.productId!r} in stock; no order was created",
            type_="urn:tinysaga:problem:out-of-stock",
        ) from e
    except domain.Overloaded as e:
        raise overloaded(e) from e
    if row["request_hash"] != digest:
        raise reused_with_other_body()
    return JSON(order_json(row), status_code=202, headers={"Location": f"/api/orders/{row['order_id']}"})


async def _request(handler: OrderRequest, order_id: str, owner: str | None) -> Row:
    """Run a cancel, ship or deliver request: 404 for no such order (or someone else's), 409 when
    the order's status does not allow it."""
    try:
        return await handler(_parse_order_id(order_id), owner)
    except domain.UnknownOrder as e:
        raise Problem(404, "Not Found", "no such order") from e
    except domain.Refused as e:
        raise Problem(409, "Conflict", str(e), type_="urn:tinysaga:problem:order-status") from e


@router.post("/api/orders/{order_id}/cancel", status_code=202)
async def cancel_order(
    order_id: str,
    request: Request,
    user: Identity = Depends(current_user),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSON:
    check_key(idempotency_key)  # accepted and checked; a repeated cancel is harmless anyway
    row = await _request(deps(request).cancel_order, order_id, user.user_id)
    return JSON(order_json(row), status_code=202)


@router.post("/api/admin/orders/{order_id}/ship")
async def ship_order(order_id: str, request: Request, _: Identity = Depends(admin_user)) -> dict[str, Any]:
    return admin_order_json(await _request(deps(request).ship_order, order_id, None))


@router.post("/api/admin/orders/{order_id}/deliver")
async def deliver_order(order_id: str, request: Request, _: Identity = Depends(admin_user)) -> dict[str, Any]:
    return admin_order_json(await _request(deps(request).deliver_order, order_id, None))


@router.post("/api/admin/orders/{order_id}/refund-retry", status_code=202)
async def refund_retry(order_id: str, request: Request, _: Identity = Depends(admin_user)) -> JSON:
    """An operator retries the refund of an order whose refund failed: 202 with the order (its
    refund status moves to REFUND_DONE when Payment's retry at the wallet succeeds); 409 when it
    has no failed refund; 404 for no such order."""
    try:
        row = await deps(request).retry_refund(_parse_order_id(order_id))
    except domain.UnknownOrder as e:
        raise Problem(404, "Not Found", "no such order") from e
    except domain.NothingToRetry as e:
        raise Problem(409, "Conflict", str(e), type_="urn:tinysaga:problem:nothing-to-retry") from e
    return JSON(admin_order_json(row), status_code=202)


def _cursor_encode(row: Row) -> str:
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
    after = _cursor_decode(cursor) if cursor else None
    rows = await deps(request).orders.list_for_user(user.user_id, limit + 1, after)
    headers = {}
    if len(rows) > limit:
        rows = rows[:limit]
        headers["X-Next-Cursor"] = _cursor_encode(rows[-1])
    return JSON([order_json(r) for r in rows], headers=headers)


@router.get("/api/orders/{order_id}")
async def get_order(order_id: str, request: Request, user: Identity = Depends(current_user)) -> dict[str, Any]:
    return order_json(await _own_order(deps(request).orders, user, order_id))


@router.get("/api/orders/{order_id}/history")
async def order_history(
    order_id: str, request: Request, user: Identity = Depends(current_user)
) -> list[dict[str, Any]]:
    orders = deps(request).orders
    row = await _own_order(orders, user, order_id)
    return [
        {
            "orderStatus": r["order_status"],
            "statusInfo": r["status_info"],
            "eventName": r["event_name"],
            "at": r["at"].isoformat(),
        }
        for r in await orders.history(row["order_id"])
    ]


# ---- the saga map -----------------------------------------------------------------------------------


@router.get("/api/saga/definition")
async def saga_definition(request: Request, _: Identity = Depends(current_user)) -> dict[str, Any]:
    """The saga as declared in the code (contracts/saga.py): every step (participant, kind, what
    triggers it, what it publishes, its compensation, the status it leads to, what starts it in the
    stack's saga mode) and every arrow between them. What the saga map draws."""
    return saga.definition(deps(request).saga_mode)


@router.get("/api/orders/{order_id}/saga")
async def order_saga(order_id: str, request: Request, user: Identity = Depends(current_user)) -> dict[str, Any]:
    """Where the order is in the saga and what each service did for it, and when, from each
    participant's own records; a participant that does not answer in time is `unknown`."""
    d = deps(request)
    return await d.saga_map(await _own_order(d.orders, user, order_id))


@router.get("/api/admin/orders/{order_id}/saga")
async def admin_order_saga(order_id: str, request: Request, _: Identity = Depends(admin_user)) -> dict[str, Any]:
    """The saga map of any order, for the admin (404 for no such order)."""
    d = deps(request)
    row = await d.orders.get(_parse_order_id(order_id))
    if row is None:
        raise Problem(404, "Not Found", "no such order")
    return await d.saga_map(row)


@router.get(routes.ORDER_RECORDS)
async def order_records(orderId: str, request: Request) -> dict[str, Any]:
    """What Order did for the order (its history rows as records of the saga's steps), as every
    participant answers; none for an order it does not have. 422 for an id that is not a UUID."""
    oid = uuid_in_path(orderId, "orderId")
    history = await deps(request).orders.history(oid)
    return records.answer(saga.ORDER, str(oid), saga_map.order_records(history))


# ---- live status over Server-Sent Events ---------------------------------------------------------


@router.get("/api/orders/{order_id}/events")
async def order_events(
    order_id: str,
    request: Request,
    user: Identity = Depends(current_user),
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
) -> EventSourceResponse:
    d = deps(request)
    row = await _own_order(d.orders, user, order_id)
    key = str(row["order_id"])
    try:
        last_seen = int(last_event_id) if last_event_id else 0
    except ValueError:
        last_seen = 0

    async def stream() -> Any:
        nonlocal last_seen
        wake = d.fanout.watch(key)
        try:
            while True:
                wake.clear()
                current = await d.orders.get(row["order_id"])
                d.fanout.saw(key, wake, current["version"])
                if current["version"] > last_seen:
                    last_seen = current["version"]
                    yield ServerSentEvent(
                        data=orjson.dumps(order_json(current), default=float).decode(),
                        event="order-status",
                        id=str(current["version"]),
                    )
                if domain.stream_done(current["order_status"], current["refund_status"]):
                    return
                try:
                    await asyncio.wait_for(wake.wait(), 15)
                except TimeoutError:
                    pass
        finally:
            d.fanout.unwatch(key, wake)

    return EventSourceResponse(stream(), ping=10, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# ---- operator views -------------------------------------------------------------------------------


@router.get("/internal/orders/{order_id}/requested/{event_name}")
async def requested(order_id: str, event_name: str, request: Request) -> dict[str, Any]:
    """For Payment and Inventory, before they compensate an ORDER_TIMED_OUT or an
    ORDER_CANCEL_REQUESTED: did Order ask for it (the order's history holds that event)? 422 for
    another event name, 404 for an order that does not exist."""
    if event_name not in domain.ASKABLE:
        raise Problem(
            422,
            "Unprocessable Content",
            f"eventName must be one of {sorted(domain.ASKABLE)}",
            errors=[{"field": "eventName", "message": "not a compensation Order requests", "type": "value_error"}],
        )
    oid = _parse_order_id(order_id)
    found = await deps(request).orders.requested(oid, event_name)
    if found is None:
        raise Problem(404, "Not Found", "no such order")
    return {"orderId": str(oid), "eventName": event_name, "requested": found}


@router.get("/api/admin/sagas")
async def recent_sagas(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    status: str | None = Query(None, max_length=30),
    _: Identity = Depends(admin_user),
) -> list[dict[str, Any]]:
    orders = deps(request).orders
    rows = await orders.recent(status, limit)
    hist = await orders.steps_of([r["order_id"] for r in rows])
    steps: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for h in hist:
        steps[h["order_id"]].append(
            {"orderStatus": h["order_status"], "eventName": h["event_name"], "at": h["at"].isoformat()}
        )
    return [{**admin_order_json(r), "steps": steps[r["order_id"]]} for r in rows]


@router.get("/api/admin/sagas/stuck")
async def stuck_sagas(
    request: Request, limit: int = Query(100, ge=1, le=500), _: Identity = Depends(admin_user)
) -> list[dict[str, Any]]:
    """The sagas past their status's deadline (ADR 40), longest in their status first."""
    return await deps(request).stuck.list(limit)


@router.get("/api/admin/sagas/summary")
async def sagas_summary(
    request: Request,
    windowSeconds: float = Query(60, gt=0, le=3600),  # noqa: N803 - the query parameter's name
    _: Identity = Depends(admin_user),
) -> dict[str, Any]:
    """The figures of the operations view (`./tiny-saga top`): sagas per second, p50 and p99 of the
    sagas that ended in the window, in flight and stuck by status, dead letters."""
    d = deps(request)
    return await d.stuck.summary(windowSeconds, d.dead_letters)


@router.get("/api/admin/alerts")
async def alerts(request: Request, _: Identity = Depends(admin_user)) -> list[dict[str, Any]]:
    rows = await deps(request).orders.alerts(500)
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
