"""All of Order's SQL: the orders, their history, the operator's alerts, and the copy of the
dead-letter topic. A repository is built on a pool or a connection (`db`) for reads; the writes
that stage events need the unit of work they belong to (`uow`), the only writer of outbox rows."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from tinysaga.contracts import events as ev
from tinysaga.order import domain
from tinysaga.order.orchestrator import Outgoing
from tinysaga.platform.uow import PgUnitOfWork

Row = Mapping[str, Any]  # an asyncpg.Record, or a dict in the tests' fakes


def state_of(row: Row) -> domain.OrderState:
    """The state machine's view of an orders row."""
    return domain.OrderState(
        status=domain.Status(row["order_status"]),
        fail_reason=domain.FailReason(row["fail_reason"]) if row["fail_reason"] else None,
        refund_status=domain.Refund(row["refund_status"]) if row["refund_status"] else None,
        status_info=row["status_info"],
        transaction_id=row["transaction_id"],
        payment_settled=row["payment_settled"],
        stock_settled=row["stock_settled"],
    )


class OrderRepository:
    def __init__(self, db: asyncpg.Pool | asyncpg.Connection, uow: PgUnitOfWork | None = None) -> None:
        self.db = db
        self.uow = uow

    @classmethod
    def of(cls, uow: PgUnitOfWork) -> OrderRepository:
        """The repository of a unit of work (the handlers' factory)."""
        return cls(uow.conn, uow)

    @classmethod
    @asynccontextmanager
    async def outside_transaction(cls, pool: asyncpg.Pool, topic: str) -> AsyncIterator[OrderRepository]:
        """On a pool connection without an explicit transaction: each one-statement change is
        its own transaction (one round trip, no BEGIN/COMMIT), so what it staged is published at
        the end even when a later statement failed."""
        uow: PgUnitOfWork | None = None
        try:
            async with pool.acquire() as conn:
                uow = PgUnitOfWork(conn, topic)
                yield cls(conn, uow)
        finally:
            if uow is not None:
                await uow.committed()

    def _uow(self) -> PgUnitOfWork:
        if self.uow is None:
            raise RuntimeError("this change stages an event: build the repository on a unit of work")
        return self.uow

    # ---- reads ---------------------------------------------------------------------------------

    async def get(self, order_id: uuid.UUID) -> asyncpg.Record | None:
        return await self.db.fetchrow("SELECT * FROM orders WHERE order_id=$1", order_id)

    async def get_for_update(self, order_id: uuid.UUID) -> asyncpg.Record | None:
        """The order, locked until the transaction ends (None: no such order)."""
        return await self.db.fetchrow("SELECT * FROM orders WHERE order_id=$1 FOR UPDATE", order_id)

    async def lock_all(self, order_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
        """The orders there are of these, locked until the transaction ends, by order id: one
        statement, which takes the locks in the order of the ids (so two such never deadlock)."""
        rows = await self.db.fetch(
            "SELECT * FROM orders WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE", list(order_ids)
        )
        return {r["order_id"]: r for r in rows}

    async def by_idempotency_key(self, user_id: str, key: str | None) -> asyncpg.Record | None:
        return await self.db.fetchrow("SELECT * FROM orders WHERE user_id=$1 AND idempotency_key=$2", user_id, key)

    async def list_for_user(
        self, user_id: str, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[asyncpg.Record]:
        """A user's orders, newest first, from just after `after` (created_at, order_id) if given."""
        if after is not None:
            return await self.db.fetch(
                "SELECT * FROM orders WHERE user_id=$1 AND (created_at, order_id) < ($2, $3)"
                " ORDER BY created_at DESC, order_id DESC LIMIT $4",
                user_id,
                after[0],
                after[1],
                limit,
            )
        return await self.db.fetch(
            "SELECT * FROM orders WHERE user_id=$1 ORDER BY created_at DESC, order_id DESC LIMIT $2",
            user_id,
            limit,
        )

    async def history(self, order_id: uuid.UUID) -> list[asyncpg.Record]:
        return await self.db.fetch(
            "SELECT order_status, status_info, event_name, at FROM order_history WHERE order_id=$1 ORDER BY id",
            order_id,
        )

    async def requested(self, order_id: uuid.UUID, event_name: str) -> bool | None:
        """Whether Order asked for this compensation (the order's history holds `event_name`:
        ORDER_TIMED_OUT, ORDER_CANCEL_REQUESTED); None when there is no such order."""
        return await self.db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM order_history WHERE order_id=$1 AND event_name=$2)"
            " FROM orders WHERE order_id=$1",
            order_id,
            event_name,
        )

    async def recent(self, status: str | None, limit: int) -> list[asyncpg.Record]:
        """The latest orders, of one status if given."""
        return await self.db.fetch(
            "SELECT * FROM orders WHERE ($1::text IS NULL OR order_status=$1) ORDER BY created_at DESC LIMIT $2",
            status,
            limit,
        )

    async def steps_of(self, order_ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
        """The history rows of several orders, in the order they were written."""
        return await self.db.fetch(
            "SELECT order_id, order_status, event_name, at FROM order_history WHERE order_id = ANY($1::uuid[])"
            " ORDER BY id",
            list(order_ids),
        )

    async def stuck(self, after: Mapping[str, float], limit: int) -> list[asyncpg.Record]:
        """The orders that stayed in their status longer than `after` allows (status -> seconds),
        longest first, each with `age_seconds` (since it entered its status), `last_event` and
        `last_at` (its latest history row)."""
        return await self.db.fetch(
            "SELECT o.*, extract(epoch FROM clock_timestamp() - o.updated_at)::float8 AS age_seconds,"
            " h.event_name AS last_event, h.at AS last_at"
            " FROM orders o JOIN unnest($1::text[], $2::float8[]) AS l(status, secs) ON o.order_status = l.status"
            " LEFT JOIN LATERAL (SELECT event_name, at FROM order_history WHERE order_id = o.order_id"
            " ORDER BY id DESC LIMIT 1) h ON true"
            " WHERE o.updated_at < clock_timestamp() - l.secs * interval '1 second'"
            " ORDER BY o.updated_at LIMIT $3",
            list(after),
            list(after.values()),
            limit,
        )

    async def saga_counts(self, after: Mapping[str, float]) -> dict[str, tuple[int, int, float | None]]:
        """For each status of `after` (status -> seconds): how many orders are in it, how many of
        them stayed longer than it allows, and the seconds since the longest there entered it (None
        when there is none); one query."""
        rows = await self.db.fetch(
            "SELECT l.status, count(o.order_id) AS n, count(o.order_id) FILTER"
            " (WHERE o.updated_at < clock_timestamp() - l.secs * interval '1 second') AS stuck,"
            " extract(epoch FROM clock_timestamp() - min(o.updated_at))::float8 AS oldest"
            " FROM unnest($1::text[], $2::float8[]) AS l(status, secs)"
            " LEFT JOIN orders o ON o.order_status = l.status GROUP BY l.status",
            list(after),
            list(after.values()),
        )
        return {r["status"]: (r["n"], r["stuck"], r["oldest"]) for r in rows}

    async def versions(self, order_ids: list[str]) -> dict[str, int]:
        """The current version of each of these orders (the live streams' reading, ADR 53)."""
        rows = await self.db.fetch(
            "SELECT order_id::text AS id, version FROM orders WHERE order_id = ANY($1::uuid[])", order_ids
        )
        return {r["id"]: r["version"] for r in rows}

    async def in_flight(self) -> domain.InFlight:
        """The sagas in flight (orders in an unsettled status), how many and the median one's age
        (ADR 50, 52): the function `sagas_in_flight`, which reads them through the partial index
        orders_unsettled and never by a scan of the whole table (ADR 69)."""
        row = await self.db.fetchrow("SELECT n, median_age FROM sagas_in_flight()")
        return domain.InFlight(row["n"], max(0.0, row["median_age"]))

    async def ended_within(self, seconds: float) -> list[asyncpg.Record]:
        """The sagas that ended in the last `seconds`: for each order whose first PLACED, FAILED or
        CANCELED history row is that recent, that status (`outcome`) and the seconds from the order's
        creation to it (`seconds`)."""
        return await self.db.fetch(
            "WITH ended AS (SELECT DISTINCT ON (h.order_id) h.order_id, h.order_status, h.at FROM order_history h"
            " WHERE h.order_status = ANY($1::text[]) AND h.at > clock_timestamp() - $2 * interval '1 second'"
            " ORDER BY h.order_id, h.id)"
            " SELECT e.order_status AS outcome, extract(epoch FROM e.at - o.created_at)::float8 AS seconds"
            " FROM ended e JOIN orders o USING (order_id)"
            " WHERE NOT EXISTS (SELECT 1 FROM order_history x WHERE x.order_id = e.order_id"
            " AND x.order_status = ANY($1::text[]) AND x.at < e.at)",
            [s.value for s in domain.TERMINAL],
            seconds,
        )

    async def alerts(self, limit: int = 500) -> list[asyncpg.Record]:
        return await self.db.fetch("SELECT * FROM alerts ORDER BY created_at DESC LIMIT $1", limit)

    # ---- changes -------------------------------------------------------------------------------

    async def add_order(self, order: domain.NewOrder, event: ev.Event, commands: Outgoing = ()) -> asyncpg.Record:
        """The order, its first history row, its ORDER_INITIATED (and, orchestrating, the first
        command) in the outbox: one statement, so on a connection outside a transaction one implicit
        transaction and one round trip. A reused Idempotency-Key raises
        asyncpg.UniqueViolationError."""
        row = await self._uow().change_with_event(
            "o AS (INSERT INTO orders(order_id, user_id, product_id, product_quantity, price, total_amount,"
            " currency, payment_type, order_status, status_info, idempotency_key, request_hash, deadline_at,"
            " trace_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'INITIATED',$9,$10,$11,$12,$14) RETURNING *),"
            " h AS (INSERT INTO order_history(order_id, order_status, status_info, event_name, at)"
            " SELECT order_id, 'INITIATED', status_info, $13, created_at FROM o)",
            "o",
            [
                order.order_id,
                order.user_id,
                order.product_id,
                order.quantity,
                order.price,
                order.total,
                order.currency,
                order.payment_type,
                order.status_info,
                order.idempotency_key,
                order.request_hash,
                order.deadline,
                event.eventName,
                order.trace_id,
            ],
            event,
            returning="o.*",
            also=commands,
        )
        assert row is not None  # an INSERT ... VALUES writes its row or raises
        return row

    async def save_change(
        self,
        row: Row,
        new: domain.OrderState,
        event_name: str,
        announce: ev.Event | None = None,
        commands: Outgoing = (),
    ) -> asyncpg.Record:
        """A transition with its history row (one statement); with a failed refund, the operator's
        alert too (once per order); `announce` (ORDER_CANCELED, ORDER_TIMED_OUT) and an
        orchestrator's `commands` staged in the same transaction. The order as changed."""
        changed = await self.db.fetchrow(
            "WITH u AS (UPDATE orders SET order_status=$2, fail_reason=$3, refund_status=$4, status_info=$5,"
            " transaction_id=$6, payment_settled=$8, stock_settled=$9, version = version + 1,"
            " updated_at = clock_timestamp() WHERE order_id=$1 RETURNING *),"
            " h AS (INSERT INTO order_history(order_id, order_status, status_info, event_name)"
            " SELECT order_id, $2, $5, $7 FROM u)"
            " SELECT * FROM u",
            row["order_id"],
            new.status,
            new.fail_reason,
            new.refund_status,
            new.status_info,
            new.transaction_id,
            event_name,
            new.payment_settled,
            new.stock_settled,
        )
        if announce is not None:
            await self._uow().stage(announce)
        for topic, command in commands:
            await self._uow().stage(command, topic)
        if domain.needs_alert(new):
            await self.db.execute(
                "INSERT INTO alerts(order_id, user_id, kind, detail) VALUES ($1,$2,'REFUND_FAILED',$3)"
                " ON CONFLICT DO NOTHING",
                row["order_id"],
                row["user_id"],
                domain.refund_failed_detail(row["total_amount"], row["currency"]),
            )
        assert changed is not None  # the order was read in this transaction, and orders are never deleted
        return changed

    async def save_changes(self, changes: Sequence[tuple[Row, str]]) -> None:
        """A batch's plain transitions (no event staged, no alert), each as the order stood after it
        and the name of the event that made it, in their order, in one statement (ADR 70): every
        change's history row, in order, and each order's row as its last change left it (its
        version counted one per change by the caller, the order locked in this transaction)."""
        if not changes:
            return
        await self.db.execute(
            "WITH c AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
            " $7::text[], $8::bool[], $9::bool[], $10::int[]) WITH ORDINALITY AS c(order_id, order_status,"
            " fail_reason, refund_status, status_info, transaction_id, event_name, payment_settled, stock_settled,"
            " version, n)),"
            " h AS (INSERT INTO order_history(order_id, order_status, status_info, event_name)"
            " SELECT order_id, order_status, status_info, event_name FROM c ORDER BY n)"
            " UPDATE orders o SET order_status=l.order_status, fail_reason=l.fail_reason,"
            " refund_status=l.refund_status, status_info=l.status_info, transaction_id=l.transaction_id,"
            " payment_settled=l.payment_settled, stock_settled=l.stock_settled, version=l.version,"
            " updated_at=clock_timestamp()"
            " FROM (SELECT DISTINCT ON (order_id) * FROM c ORDER BY order_id, n DESC) l WHERE o.order_id = l.order_id",
            *(
                [row[column] for row, _ in changes]
                for column in (
                    "order_id",
                    "order_status",
                    "fail_reason",
                    "refund_status",
                    "status_info",
                    "transaction_id",
                )
            ),
            [name for _, name in changes],
            [row["payment_settled"] for row, _ in changes],
            [row["stock_settled"] for row, _ in changes],
            [row["version"] for row, _ in changes],
        )

    async def requested_change(
        self, row: Row, new: domain.OrderState, event: ev.Event, commands: Outgoing = ()
    ) -> asyncpg.Record | None:
        """A request's change (a cancel, a ship, a deliver, an operator's refund retry): the new
        status (a cancel also resets the settled flags), its history row under the event's name, the
        event (and an orchestrator's `commands`) staged: one statement, done only if the order is
        still in the status it was read in. The new row, or None when the order moved on meanwhile
        (nothing written, nothing staged)."""
        return await self._uow().change_with_event(
            "u AS (UPDATE orders SET order_status=$2, status_info=$3, payment_settled=$4, stock_settled=$5,"
            " version = version + 1, updated_at = clock_timestamp() WHERE order_id=$1 AND order_status=$6"
            " RETURNING *),"
            " h AS (INSERT INTO order_history(order_id, order_status, status_info, event_name)"
            " SELECT order_id, $2, $3, $7 FROM u)",
            "u",
            [
                row["order_id"],
                new.status,
                new.status_info,
                new.payment_settled,
                new.stock_settled,
                row["order_status"],
                event.eventName,
            ],
            event,
            returning="u.*",
            also=commands,
        )

    async def overdue(self, limit: int) -> list[asyncpg.Record]:
        """In-flight orders past their deadline, oldest deadline first, locked; rows another
        sweeper holds are skipped (SKIP LOCKED), so several sweepers are safe."""
        return await self.db.fetch(
            "SELECT * FROM orders WHERE order_status = ANY($1::text[]) AND deadline_at < clock_timestamp()"
            " ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            [s.value for s in domain.IN_FLIGHT],
            limit,
        )


class DeadLetterRepository:
    """Order's copy of the dead-letter topic, and the replay of one of its messages."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection, uow: PgUnitOfWork | None = None) -> None:
        self.db = db
        self.uow = uow

    @classmethod
    def of(cls, uow: PgUnitOfWork) -> DeadLetterRepository:
        return cls(uow.conn, uow)

    async def add(self, dlt_partition: int, dlt_offset: int, letter: Mapping[str, Any]) -> None:
        """Keep a dead letter (its place in the dead-letter topic makes it once only), with the
        event name its message carries."""
        payload, encoding = str(letter.get("payload", "")), str(letter.get("payloadEncoding", "utf-8"))
        await self.db.execute(
            "INSERT INTO dead_letters(dlt_partition, dlt_offset, service, error, source_topic,"
            " source_partition, source_offset, message_key, payload, payload_encoding, event_name)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT DO NOTHING",
            dlt_partition,
            dlt_offset,
            str(letter.get("service", "?")),
            str(letter.get("error", "")),
            str(letter.get("topic", "")),
            int(letter.get("partition", -1)),
            int(letter.get("offset", -1)),
            str(letter.get("key", "")),
            payload,
            encoding,
            domain.dead_letter_event_name(payload, encoding),
        )

    async def latest(self, limit: int) -> list[asyncpg.Record]:
        return await self.db.fetch("SELECT * FROM dead_letters ORDER BY id DESC LIMIT $1", limit)

    async def counts(self) -> tuple[int, int]:
        """How many dead letters are kept, and how many of them were never replayed."""
        row = await self.db.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE replay_count = 0) AS fresh FROM dead_letters"
        )
        assert row is not None
        return row["n"], row["fresh"]

    async def get_for_update(self, dead_letter_id: int) -> asyncpg.Record | None:
        return await self.db.fetchrow("SELECT * FROM dead_letters WHERE id=$1 FOR UPDATE", dead_letter_id)

    async def matching(self, f: domain.DeadLetterFilter, lock: bool = False) -> list[asyncpg.Record]:
        """The dead letters `f` selects, oldest first, at most `f.limit`: of a service, of an event
        name, whose error contains a text (case-insensitive), and only those never replayed unless
        `f.include_replayed`. `lock`: locked for a replay, skipping those another replay holds."""
        return await self.db.fetch(
            "SELECT * FROM dead_letters WHERE ($1::text IS NULL OR service = $1)"
            " AND ($2::text IS NULL OR event_name = $2)"
            " AND ($3::text IS NULL OR strpos(lower(error), lower($3)) > 0)"
            " AND ($4 OR replay_count = 0) ORDER BY id LIMIT $5" + (" FOR UPDATE SKIP LOCKED" if lock else ""),
            f.service,
            f.event_name,
            f.error_contains,
            f.include_replayed,
            f.limit,
        )

    async def replay(self, row: Row) -> None:
        """Put a dead letter's original bytes back on its topic (through the outbox; the unit of
        work's topic when the letter names none), for the service that dead-lettered it only (the
        others had handled or skipped it already), and mark it replayed."""
        if self.uow is None:
            raise RuntimeError("a replay stages a message: build the repository on a unit of work")
        raw = base64.b64decode(row["payload"]) if row["payload_encoding"] == "base64" else row["payload"].encode()
        await self.uow.stage_raw(
            row["source_topic"] or self.uow.topic,
            row["message_key"] or str(row["id"]),
            "REPLAY",
            raw,
            {"replayOf": str(row["id"]), "replayFor": row["service"]},
        )
        await self.db.execute(
            "UPDATE dead_letters SET replayed_at=now(), replay_count = replay_count + 1 WHERE id=$1", row["id"]
        )
