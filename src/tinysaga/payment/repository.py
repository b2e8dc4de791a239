"""All of Payment's SQL: the payments table, one row per order Payment has acted on. Built on a pool
(reads outside a transaction) or on a unit of work (writes, with the events that go with them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from tinysaga.contracts.events import Event
from tinysaga.payment.domain import Payment, Status
from tinysaga.platform.uow import PgUnitOfWork, outbox_values


def payment_of(row: Mapping[str, Any]) -> Payment:
    return Payment(
        order_id=row["order_id"],
        user_id=row["user_id"],
        amount=row["amount"],
        currency=row["currency"],
        status=Status(row["status"]),
        transaction_id=row["transaction_id"],
        detail=row["detail"],
    )


class PaymentRepository:
    def __init__(self, db: asyncpg.Pool | asyncpg.Connection, uow: PgUnitOfWork | None = None) -> None:
        self.db = db
        self.uow = uow

    @classmethod
    def of(cls, uow: PgUnitOfWork) -> PaymentRepository:
        """The repository of a unit of work (the handlers' factory)."""
        return cls(uow.conn, uow)

    def _uow(self) -> PgUnitOfWork:
        if self.uow is None:
            raise RuntimeError("this change stages an event: build the repository on a unit of work")
        return self.uow

    # ---- reads ---------------------------------------------------------------------------------

    async def acted_on(self, order_ids: Sequence[str]) -> set[str]:
        """The orders among `order_ids` that have a payment row (one query for a batch)."""
        rows = await self.db.fetch("SELECT order_id FROM payments WHERE order_id = ANY($1::text[])", list(order_ids))
        return {r["order_id"] for r in rows}

    async def get(self, order_id: str) -> Payment | None:
        row = await self.db.fetchrow("SELECT * FROM payments WHERE order_id=$1", order_id)
        return None if row is None else payment_of(row)

    async def row(self, order_id: str) -> asyncpg.Record | None:
        """The order's payments row as stored, with when it was written and last changed."""
        return await self.db.fetchrow("SELECT * FROM payments WHERE order_id=$1", order_id)

    async def void_pending(self, limit: int = 100) -> list[Payment]:
        """The payments whose charge had an unknown outcome, longest waiting first."""
        rows = await self.db.fetch(
            "SELECT * FROM payments WHERE status=$1 ORDER BY updated_at LIMIT $2", Status.VOID_PENDING.value, limit
        )
        return [payment_of(r) for r in rows]

    # ---- writes --------------------------------------------------------------------------------

    async def add_charges(self, charges: Sequence[tuple[Payment, Event]]) -> None:
        """A batch's charges (ADR 70): each payment row and its outcome event, in one statement, as
        if one after the other: a row already there for the order (or earlier in `charges`, the same
        order twice in one poll under two eventIds) writes nothing and stages nothing, and the first
        one's event stands."""
        if not charges:
            return
        uow = self._uow()
        outbox = [outbox_values(uow.topic, event) for _, event in charges]
        rows = await self.db.fetch(
            "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::text[], $5::text[],"
            " $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[], $11::jsonb[]) WITH ORDINALITY"
            " AS v(order_id, user_id, amount, currency, status, transaction_id, topic, key, name, payload, headers,"
            " n)),"
            " p AS (INSERT INTO payments(order_id, user_id, amount, currency, status, transaction_id)"
            " SELECT order_id, user_id, amount, currency, status, transaction_id FROM v ORDER BY n"
            " ON CONFLICT (order_id) DO NOTHING RETURNING order_id),"
            " firsts AS (SELECT DISTINCT ON (order_id) * FROM v WHERE order_id IN (SELECT order_id FROM p)"
            " ORDER BY order_id, n)"
            " INSERT INTO outbox(topic, key, event_name, payload, headers)"
            " SELECT topic, key, name, payload, headers FROM firsts ORDER BY n"
            " RETURNING id, topic, key, payload, headers::text",
            [p.order_id for p, _ in charges],
            [p.user_id for p, _ in charges],
            [p.amount for p, _ in charges],
            [p.currency for p, _ in charges],
            [p.status.value for p, _ in charges],
            [p.transaction_id for p, _ in charges],
            *([row[i] for row in outbox] for i in range(5)),
        )
        uow.staged_as_returned(sorted(rows, key=lambda r: r["id"]))

    async def add_unless_exists(self, p: Payment, event: Event | None = None) -> None:
        """A payment row of a void before any charge, and `event` (a cancel's answer) staged in the
        same statement, only if the row was written; nothing if the order has one."""
        insert = (
            "INSERT INTO payments(order_id, user_id, amount, currency, status, detail)"
            " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING"
        )
        args = (p.order_id, p.user_id, p.amount, p.currency, p.status.value, p.detail)
        if event is None:
            await self.db.execute(insert, *args)
        else:
            await self._uow().change_with_event(f"p AS ({insert} RETURNING 1)", "p", args, event)

    async def move(
        self, order_id: str, from_status: Status, to: Status, detail: str, event: Event | None = None
    ) -> bool:
        """Change the payment's status (and detail) if it is still `from_status`; stage `event` with
        the change. False when it was not (another delivery moved it first): nothing staged."""
        changed = await self.db.fetchval(
            "UPDATE payments SET status=$2, detail=$3, updated_at=now() WHERE order_id=$1 AND status=$4 RETURNING 1",
            order_id,
            to.value,
            detail,
            from_status.value,
        )
        if changed and event is not None:
            await self._uow().stage(event)
        return bool(changed)
