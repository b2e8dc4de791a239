"""Inventory routes: the catalogue, the admin's products and stock, and (internal) what it did for an
order."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from tinysaga.contracts import records, routes
from tinysaga.contracts.ids import is_product_id
from tinysaga.inventory import domain
from tinysaga.inventory.domain import MAX_STOCK
from tinysaga.inventory.repository import ProductExists
from tinysaga.platform.money import Price, as_number
from tinysaga.platform.service import runtime
from tinysaga.platform.web import JSON, Identity, Problem, admin_user, uuid_in_path

if TYPE_CHECKING:
    from tinysaga.inventory.bootstrap import InventoryDeps

router = APIRouter()

ProductId = Path(..., min_length=1, max_length=64)


def deps(request: Request) -> InventoryDeps:
    """The service's dependencies (built by its bootstrap)."""
    return runtime(request).deps


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
    d = deps(request)
    return [product_json(r, d.currency) for r in await d.catalogue.products()]


@router.get("/api/products/{product_id}")
async def get_product(request: Request, product_id: str = ProductId) -> dict[str, Any]:
    d = deps(request)
    row = await d.catalogue.product(product_id)
    if row is None:
        raise Problem(404, "Not Found", f"no product {product_id!r}")
    return product_json(row, d.currency)


@router.post("/api/admin/products", status_code=201)
async def create_product(body: ProductIn, request: Request, admin: Identity = Depends(admin_user)) -> JSON:
    d = deps(request)
    pid = body.productId or f"sku-{uuid.uuid4().hex[:12]}"
    try:
        row = await d.catalogue.create_product(
            pid, body.name.strip(), body.type.strip(), body.price, body.availableCount, admin.user_id
        )
    except ProductExists as e:
        raise Problem(409, "Conflict", f"product {pid!r} already exists") from e
    return JSON(product_json(row, d.currency), status_code=201, headers={"Location": f"/api/products/{pid}"})


@router.put("/api/admin/products/{product_id}/stock")
async def set_stock(
    body: StockIn, request: Request, product_id: str = ProductId, admin: Identity = Depends(admin_user)
) -> dict[str, Any]:
    d = deps(request)
    row = await d.catalogue.set_stock(product_id, body.availableCount, admin.user_id)
    if row is None:
        raise Problem(404, "Not Found", f"no product {product_id!r}")
    return product_json(row, d.currency)


@router.get(routes.ORDER_RECORDS)
async def order_records(orderId: str, request: Request) -> dict[str, Any]:
    """What Inventory did for the order (its reservation row as records of the saga's steps); no
    record for an order that never reached it. 422 for an id that is not a UUID."""
    order_id = str(uuid_in_path(orderId, "orderId"))
    row = await deps(request).catalogue.reservation_row(order_id)
    found = (
        []
        if row is None
        else domain.records(row["status"], row["product_id"], row["quantity"], row["created_at"], row["updated_at"])
    )
    return records.answer("inventory", order_id, found)
