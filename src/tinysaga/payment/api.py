"""Payment's routes: it is a consumer, so only the internal one that tells what it did for an order
(the saga map; the health endpoints come with every service)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from tinysaga.contracts import records, routes
from tinysaga.payment import domain
from tinysaga.payment.repository import payment_of
from tinysaga.platform.service import runtime
from tinysaga.platform.web import uuid_in_path

if TYPE_CHECKING:
    from tinysaga.payment.bootstrap import PaymentDeps

router = APIRouter()


def deps(request: Request) -> PaymentDeps:
    return runtime(request).deps


@router.get(routes.ORDER_RECORDS)
async def order_records(orderId: str, request: Request) -> dict[str, Any]:
    """What Payment did for the order (its payments row as records of the saga's steps); no record
    for an order it never acted on. 422 for an id that is not a UUID."""
    order_id = str(uuid_in_path(orderId, "orderId"))
    row = await deps(request).payments.row(order_id)
    found = [] if row is None else domain.records(payment_of(row), row["created_at"], row["updated_at"])
    return records.answer("payment", order_id, found)
