"""All of Inventory's SQL: products, stock_changes and reservations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from tinysaga.contracts.events import Event
from tinysaga.inventory.domain import CANCELLED, REJECTED, RELEASED, RESERVED, Status
from tinysaga.platform.uow import PgUnitOfWork


class ProductExists(Exception):
    """A product with this id is already in the catalogue."""


@dataclass(frozen=True)
class Reservation:
    product_id: str
    quantity: int
    status: Status


class InventoryRepository:
    """Built on a pool (the catalogue and the admin's changes, each in a transaction of its own) or
    on a unit of work's connection (the handlers: `uow` stages the events that go with a change)."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection, uow: PgUnitOfWork | None = None) -> None:
        self.db = db
        self.uow = uow

    @classmethod
    def of(cls, uow: PgUnitOfWork) -> InventoryRepository:
        """The repository of a handler's unit of work."""
        return cls(uow.conn, uow)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        if isinstance(self.db, asyncpg.Pool):
            async with self.db.acquire() as conn, conn.transaction():
                yield conn
        else:
            async with self.db.transaction():
                yield self.db

    # ---- reservations (in a handler's unit of work) --------------------------------------------

    async def lock_reservations(self, order_ids: Sequence[str]) -> dict[str, Reservation]:
        """These orders' reservations, by order, locked until the transaction ends (in the orders'
        order, so two transactions never wait on each other); an order without one is not there."""
        rows = await self.db.fetch(
            "SELECT order_id, product_id, quantity, status FROM reservations WHERE order_id = ANY($1::text[])"
            " ORDER BY order_id FOR UPDATE",
            list(order_ids),
        )
        return {r["order_id"]: Reservation(r["product_id"], r["quantity"], Status(r["status"])) for r in rows}

    async def reserve(self, order_id: str, product_id: str, quantity: int, answers: Mapping[Status, Event]) -> Status:
        """`domain.reserve` for an order without a reservation, enforced atomically by one
        conditional UPDATE: the quantity taken when the stock covers it (RESERVED), else nothing
        (REJECTED; also for an unknown product); the order's row with that status and the answer
        for it (`answers`, by status) staged, all in one statement."""
        assert self.uow is not None, "a write that stages an event needs the unit of work"
        status = await self.uow.change_with_outcome(
            "t AS (UPDATE products SET available_count = available_count - $3, updated_at = now()"
            " WHERE product_id = $2 AND available_count >= $3 RETURNING 1),"
            " r AS (INSERT INTO reservations(order_id, product_id, quantity, status)"
            f" SELECT $1, $2, $3, CASE WHEN EXISTS (SELECT 1 FROM t) THEN '{RESERVED}' ELSE '{REJECTED}' END"
            " RETURNING status)",
            "r",
            (order_id, product_id, quantity),
            {str(k): v for k, v in answers.items()},
            outcome="status",
        )
        assert status is not None  # an INSERT ... SELECT of one row writes it or raises
        return Status(status)

    async def cancel(self, order_id: str, product_id: str, quantity: int, event: Event | None = None) -> None:
        """A CANCELLED row for an order with none: a later PAYMENT_DONE finds it and reserves nothing.
        `event` (a cancel's INVENTORY_RELEASED) is staged in the same statement."""
        insert = "INSERT INTO reservations(order_id, product_id, quantity, status) VALUES ($1,$2,$3,$4)"
        args = (order_id, product_id, quantity, CANCELLED.value)
        if event is None:
            await self.db.execute(insert, *args)
        else:
            await self._uow().change_with_event(f"r AS ({insert} RETURNING 1)", "r", args, event)

    async def give_back(self, order_id: str, product_id: str, quantity: int, event: Event | None = None) -> None:
        """Put a RESERVED order's quantity back in stock and mark its row RELEASED; `event` (a
        cancel's INVENTORY_RELEASED) is staged in the row's statement."""
        await self.db.execute(
            "UPDATE products SET available_count = available_count + $2, updated_at = now() WHERE product_id = $1",
            product_id,
            quantity,
        )
        mark = "UPDATE reservations SET status=$2, updated_at=now() WHERE order_id=$1"
        if event is None:
            await self.db.execute(mark, order_id, RELEASED.value)
        else:
            await self._uow().change_with_event(f"r AS ({mark} RETURNING 1)", "r", (order_id, RELEASED.value), event)

    def _uow(self) -> PgUnitOfWork:
        if self.uow is None:
            raise RuntimeError("a write that stages an event needs the unit of work")
        return self.uow

    async def reservation_row(self, order_id: str) -> asyncpg.Record | None:
        """The order's reservation row as stored, with when it was written and last changed."""
        return await self.db.fetchrow("SELECT * FROM reservations WHERE order_id=$1", order_id)

    # ---- the catalogue --------------------------------------------------------------------------

    async def products(self) -> list[asyncpg.Record]:
        """Every product, by type then name."""
        return await self.db.fetch("SELECT * FROM products ORDER BY product_type, name")

    async def product(self, product_id: str) -> asyncpg.Record | None:
        return await self.db.fetchrow("SELECT * FROM products WHERE product_id=$1", product_id)

    async def create_product(
        self, product_id: str, name: str, product_type: str, price: Decimal, count: int, changed_by: str
    ) -> asyncpg.Record:
        """A new product and the log line of its first stock, in one transaction; ProductExists when
        the id is taken."""
        async with self._transaction() as conn:
            try:
                row = await conn.fetchrow(
                    "INSERT INTO products(product_id, name, product_type, price, available_count)"
                    " VALUES ($1,$2,$3,$4,$5) RETURNING *",
                    product_id,
                    name,
                    product_type,
                    price,
                    count,
                )
            except asyncpg.UniqueViolationError as e:
                raise ProductExists(product_id) from e
            await self._log_stock(conn, product_id, count, changed_by)
        return row

    async def set_stock(self, product_id: str, count: int, changed_by: str) -> asyncpg.Record | None:
        """Set a product's stock and log it, in one transaction; None for an unknown product."""
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE products SET available_count=$2, updated_at=now() WHERE product_id=$1 RETURNING *",
                product_id,
                count,
            )
            if row is None:
                return None
            await self._log_stock(conn, product_id, count, changed_by)
        return row

    @staticmethod
    async def _log_stock(conn: asyncpg.Connection, product_id: str, count: int, changed_by: str) -> None:
        await conn.execute(
            "INSERT INTO stock_changes(product_id, new_count, changed_by) VALUES ($1,$2,$3)",
            product_id,
            count,
            changed_by,
        )
