"""Order's view of other services: the catalogue (Inventory) and the balance (Wallet), over HTTP,
and its own orders table."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import asyncpg

from tinysaga.contracts.ids import is_product_id
from tinysaga.platform.calls import Unreachable, get_from_any
from tinysaga.platform.money import as_number
from tinysaga.platform.service import Runtime
from tinysaga.platform.web import Problem


async def _get(rt: Runtime, service: str, path: str) -> tuple[int, Any]:
    try:
        return await get_from_any(rt, service, path)
    except Unreachable as e:
        raise Problem(503, "Service Unavailable", f"the {service} service is unavailable") from e


async def fetch_product(rt: Runtime, product_id: str) -> dict[str, Any]:
    if not is_product_id(product_id):  # no such product can exist; and never a path like "." or ".."
        raise Problem(404, "Not Found", f"no product {product_id!r}")
    status, body = await _get(rt, "inventory", f"/api/products/{quote(product_id, safe='')}")
    if status in (404, 422):
        raise Problem(404, "Not Found", f"no product {product_id!r}")
    if status != 200:
        raise Problem(503, "Service Unavailable", "the catalogue did not answer")
    return body


async def fetch_balance(rt: Runtime, user_id: str) -> dict[str, Any]:
    status, body = await _get(rt, "wallet", f"/internal/wallets/{quote(user_id, safe='')}")
    if status != 200:
        raise Problem(503, "Service Unavailable", "the wallet did not answer")
    return body


def order_json(r: asyncpg.Record) -> dict[str, Any]:
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
