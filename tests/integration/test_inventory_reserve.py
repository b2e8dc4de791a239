"""Inventory's reservation as its repository writes it, against the stack's PostgreSQL: one statement
takes the stock when it covers the quantity, writes the order's row with its status, and the outbox
row of the answer for that status (and only that one), which the unit of work stages for the
publisher. Everything runs in a transaction that is rolled back, so the running stack never sees it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg

from tests.support import rolled_back
from tinysaga.contracts import events as ev
from tinysaga.inventory.domain import INVENTORY_NOT_AVAILABLE, REJECTED, RESERVED
from tinysaga.inventory.handlers import reply
from tinysaga.inventory.repository import InventoryRepository
from tinysaga.platform.settings import Settings
from tinysaga.platform.uow import PgUnitOfWork


def answers_for(order_id: str, product_id: str, quantity: int) -> dict:
    paid = ev.make_event(
        ev.PAYMENT_DONE,
        correlation_id=order_id,
        orderId=order_id,
        userId="u-1",
        orderStatus=ev.PAYMENT_DONE,
        paymentType="WALLET",
        productId=product_id,
        productQuantity=quantity,
        price=Decimal("1.00"),
        totalAmount=Decimal(quantity),
        currency="USD",
        transactionId=str(uuid.uuid4()),
    )
    return {
        RESERVED: reply(ev.INVENTORY_RESERVED, paid),
        REJECTED: reply(ev.INVENTORY_INSUFFICIENT, paid, inventoryFailReason=INVENTORY_NOT_AVAILABLE),
    }


def test_one_statement_takes_the_stock_writes_the_row_and_the_answer_for_it(settings: Settings) -> None:
    product = f"p-{uuid.uuid4().hex[:8]}"
    first, second, unknown = (str(uuid.uuid4()) for _ in range(3))

    async def body(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "INSERT INTO products(product_id, name, product_type, price, available_count) VALUES ($1, 'w', 'x', 1, 3)",
            product,
        )
        uow = PgUnitOfWork(conn, settings.topic)
        repo = InventoryRepository.of(uow)
        assert await repo.reserve(first, product, 2, answers_for(first, product, 2)) is RESERVED
        assert await repo.reserve(second, product, 2, answers_for(second, product, 2)) is REJECTED
        assert await repo.reserve(unknown, "no-such-product", 1, answers_for(unknown, "x", 1)) is REJECTED
        assert await conn.fetchval("SELECT available_count FROM products WHERE product_id=$1", product) == 1

        orders = [first, second, unknown]
        rows = await conn.fetch("SELECT order_id, status FROM reservations WHERE order_id = ANY($1::text[])", orders)
        assert {r["order_id"]: r["status"] for r in rows} == {
            first: "RESERVED",
            second: "REJECTED",
            unknown: "REJECTED",
        }
        outbox = await conn.fetch(
            "SELECT id, key, event_name FROM outbox WHERE key = ANY($1::text[]) ORDER BY id", orders
        )
        assert [(r["key"], r["event_name"]) for r in outbox] == [
            (first, ev.INVENTORY_RESERVED),
            (second, ev.INVENTORY_INSUFFICIENT),
            (unknown, ev.INVENTORY_INSUFFICIENT),
        ]
        assert [s.id for s in uow.staged] == [r["id"] for r in outbox]
        assert [s.key for s in uow.staged] == [first, second, unknown]

    rolled_back(settings, "tinysaga_inventory", body)
