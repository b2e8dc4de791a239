"""Inventory routes (catalogue, admin stock) and its event handlers (reserve, release)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from tinysaga.contracts.events import (
    INVENTORY_INSUFFICIENT,
    INVENTORY_RESERVED,
    ORDER_TIMED_OUT,
    PAYMENT_DONE,
    Event,
    new_event,
)
from tinysaga.contracts.ids import is_product_id
from tinysaga.inventory.domain import (
    CANCELLED,
    INVENTORY_NOT_AVAILABLE,
    MAX_STOCK,
    REJECTED,
    RELEASED,
    RESERVED,
)
from tinysaga.platform.calls import order_timed_out
from tinysaga.platform.consumer import Handler, HandlerContext
from tinysaga.platform.db import outbox_values, with_outbox
from tinysaga.platform.money import Price, as_number
from tinysaga.platform.service import Runtime
from tinysaga.platform.service import runtime as _rt
from tinysaga.platform.web import JSON, Identity, Problem, admin_user

log = logging.getLogger("tinysaga.inventory")
router = APIRouter()

ProductId = Path(..., min_length=1, max_length=64)


def product_json(r: asyncpg.Record, currency: str) -> dict[str, Any]:
    return {
        "productId": r["product_id"],
        "name": r["name"],
        "type": r["product_type"],
        "price": as_number(r["price"]),
        "currency": currency,
        "availableCount": r["available_count"],
    }


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    productId: str | None = Field(None, max_length=64)
    name: str = Field(min_length=1, max_length=120)
    type: str = Field(min_length=1, max_length=40)
    price: Price
    availableCount: StrictInt = Field(ge=0, le=MAX_STOCK)

    @field_validator("productId")
    @classmethod
    def _pid(cls, v: str | None) -> str | None:
        if v is not None and not is_product_id(v):
            raise ValueError("productId: letters, digits, '.', '_' or '-', up to 64 characters")
        return v


class StockIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    availableCount: StrictInt = Field(ge=0, le=MAX_STOCK)


@router.get("/api/products")
async def list_products(request: Request) -> list[dict[str, Any]]:
    rt = _rt(request)
    rows = await rt.pool.fetch("SELECT * FROM products ORDER BY product_type, name")
    return [product_json(r, rt.settings.currency) for r in rows]


@router.get("/api/products/{product_id}")
async def get_product(request: Request, product_id: str = ProductId) -> dict[str, Any]:
    rt = _rt(request)
    row = await rt.pool.fetchrow("SELECT * FROM products WHERE product_id=$1", product_id)
    if row is None:
        raise Problem(404, "Not Found", f"no product {product_id!r}")
    return product_json(row, rt.settings.currency)


@router.post("/api/admin/products", status_code=201)
async def create_product(body: ProductIn, request: Request, admin: Identity = Depends(admin_user)) -> JSON:
    rt = _rt(request)
    pid = body.productId or f"sku-{uuid.uuid4().hex[:12]}"
    async with rt.pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                "INSERT INTO products(product_id, name, product_type, price, available_count)"
                " VALUES ($1,$2,$3,$4,$5) RETURNING *",
                pid,
                body.name.strip(),
                body.type.strip(),
                body.price,
                body.availableCount,
            )
        except asyncpg.UniqueViolationError as e:
            raise Problem(409, "Conflict", f"product {pid!r} already exists") from e
        await conn.execute(
            "INSERT INTO stock_changes(product_id, new_count, changed_by) VALUES ($1,$2,$3)",
            pid,
            body.availableCount,
            admin.user_id,
        )
    return JSON(product_json(row, rt.settings.currency), status_code=201, headers={"Location": f"/api/products/{pid}"})


@router.put("/api/admin/products/{product_id}/stock")
async def set_stock(
    body: StockIn, request: Request, product_id: str = ProductId, admin: Identity = Depends(admin_user)
) -> dict[str, Any]:
    rt = _rt(request)
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE products SET available_count=$2, updated_at=now() WHERE product_id=$1 RETURNING *",
            product_id,
            body.availableCount,
        )
        if row is None:
            raise Problem(404, "Not Found", f"no product {product_id!r}")
        await conn.execute(
            "INSERT INTO stock_changes(product_id, new_count, changed_by) VALUES ($1,$2,$3)",
            product_id,
            body.availableCount,
            admin.user_id,
        )
    return product_json(row, rt.settings.currency)


# ---- event handlers ---------------------------------------------------------------------------


def _reply(name: str, event: Event, **extra: Any) -> Event:
    return new_event(
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


def handlers(rt: Runtime) -> dict[str, Handler]:
    topic = rt.settings.topic

    async def on_payment_done(event: Event, ctx: HandlerContext) -> None:
        if not (event.orderId and event.productId and event.productQuantity):
            raise ValueError("PAYMENT_DONE without orderId, productId or productQuantity")
        async with ctx.transaction() as conn:
            prior = await conn.fetchval("SELECT status FROM reservations WHERE order_id=$1 FOR UPDATE", event.orderId)
            if prior is not None:
                log.info("order %s already has a reservation (%s); nothing to do", event.orderId, prior)
                return
            left = await conn.fetchval(
                "UPDATE products SET available_count = available_count - $2, updated_at = now()"
                " WHERE product_id = $1 AND available_count >= $2 RETURNING available_count",
                event.productId,
                event.productQuantity,
            )
            status = RESERVED if left is not None else REJECTED
            if status == RESERVED:
                reply = _reply(INVENTORY_RESERVED, event)
            else:
                reply = _reply(
                    INVENTORY_INSUFFICIENT, event, inventoryFailReason=INVENTORY_NOT_AVAILABLE, isPartialOrder=False
                )
            await conn.execute(  # the reservation row and its event, one statement
                with_outbox(
                    "INSERT INTO reservations(order_id, product_id, quantity, status) VALUES ($1,$2,$3,$4) RETURNING 1",
                    5,
                ),
                event.orderId,
                event.productId,
                event.productQuantity,
                status,
                *outbox_values(topic, reply),
            )

    async def on_order_timed_out(event: Event, ctx: HandlerContext) -> None:
        """Compensation: give back a reservation; if the timeout came first, make sure a late
        PAYMENT_DONE reserves nothing."""
        if not event.orderId:
            raise ValueError("ORDER_TIMED_OUT without orderId")
        if not await order_timed_out(rt, event.orderId):
            log.warning("ORDER_TIMED_OUT for order %s, which Order did not time out: ignored", event.orderId)
            async with ctx.transaction():
                return
        async with ctx.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT product_id, quantity, status FROM reservations WHERE order_id=$1 FOR UPDATE", event.orderId
            )
            if row is None:
                await conn.execute(
                    "INSERT INTO reservations(order_id, product_id, quantity, status) VALUES ($1,$2,$3,$4)",
                    event.orderId,
                    event.productId or "",
                    event.productQuantity or 1,
                    CANCELLED,
                )
            elif row["status"] == RESERVED:
                await conn.execute(
                    "UPDATE products SET available_count = available_count + $2, updated_at = now()"
                    " WHERE product_id = $1",
                    row["product_id"],
                    row["quantity"],
                )
                await conn.execute(
                    "UPDATE reservations SET status=$2, updated_at=now() WHERE order_id=$1", event.orderId, RELEASED
                )
                log.info("released the reservation of timed-out order %s", event.orderId)

    return {PAYMENT_DONE: on_payment_done, ORDER_TIMED_OUT: on_order_timed_out}
