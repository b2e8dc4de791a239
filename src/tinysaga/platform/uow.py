"""The unit of work: one local transaction of a service, with the ids of the events handled in it
and the events it stages for Kafka. It is the only code that writes outbox rows, so "the change and
its event commit together, or neither does" holds in one place (the transactional outbox, ADR 2).

A repository makes its changes on `uow.conn`; an event that goes with a change is staged either on
its own (`stage`, one statement) or in the same statement as the change (`change_with_event`: the
change's CTEs, then the outbox row only if the change wrote one), which is what the measured
one-statement writes of ADR 9/10 need. The NOTIFY that wakes the relay goes with the outbox row and
is delivered at commit. When tracing is on, the row's headers also carry the W3C context of the
span the event was staged in (ADR 42), which the relay passes on to Kafka.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import asyncpg
import orjson

from tinysaga.contracts.events import Event
from tinysaga.platform import tracing

OUTBOX_CHANNEL = "tinysaga_outbox"
_OUTBOX_INSERT = "INSERT INTO outbox(topic, key, event_name, payload, headers)"


def outbox_values(topic: str, event: Event) -> tuple[str, str, str, bytes, str]:
    """The outbox row of an event: topic, key (the order, else the user), name, payload, headers
    (the event's name, its correlation id and, when tracing is on, the trace context)."""
    key = event.orderId or event.userId or str(event.eventId)
    headers = {"eventName": event.eventName, "correlationId": event.correlationId, **tracing.context_headers()}
    return topic, key, event.eventName, event.to_bytes(), orjson.dumps(headers).decode()


class UnitOfWork(Protocol):
    """What handlers and repositories see of a transaction (the real one below, or a fake)."""

    topic: str

    async def stage(self, event: Event, topic: str | None = None) -> None: ...


class PgUnitOfWork:
    def __init__(self, conn: asyncpg.Connection, topic: str) -> None:
        self.conn = conn
        self.topic = topic

    @classmethod
    @asynccontextmanager
    async def begin(cls, pool: asyncpg.Pool, topic: str) -> AsyncIterator[PgUnitOfWork]:
        """A transaction of its own, committed when the block ends without an exception."""
        async with pool.acquire() as conn, conn.transaction():
            yield cls(conn, topic)

    async def stage(self, event: Event, topic: str | None = None) -> None:
        """Stage an event; it is published only if this transaction commits."""
        await self.conn.execute(
            f"WITH o AS ({_OUTBOX_INSERT} VALUES ($1, $2, $3, $4, $5) RETURNING 1)"
            f" SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM o",
            *outbox_values(topic or self.topic, event),
        )

    async def stage_raw(self, topic: str, key: str, name: str, payload: bytes, headers: dict[str, str]) -> None:
        """Stage bytes that are not an event of ours (a dead letter, a replayed message) as they are."""
        await self.conn.execute(
            f"WITH o AS ({_OUTBOX_INSERT} VALUES ($1, $2, $3, $4, $5) RETURNING 1)"
            f" SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM o",
            topic,
            key,
            name,
            payload,
            orjson.dumps({**headers, **tracing.context_headers()}).decode(),
        )

    async def change_with_event(
        self,
        ctes: str,
        source: str,
        args: Sequence[Any],
        event: Event,
        *,
        returning: str = "1",
        topic: str | None = None,
        also: Sequence[tuple[str, Event]] = (),
    ) -> asyncpg.Record | None:
        """One statement: the change (`ctes`, data-modifying CTEs using `args` as $1..$n; `source`
        names the one whose rows say the change happened), then the event's outbox row (and those of
        `also`, (topic, event) pairs: an orchestrator's commands) if `source` wrote a row, with its
        NOTIFY. Returns the first row of `source` (as `returning`), or None when the change wrote
        nothing (and so nothing was staged)."""
        rows = [outbox_values(topic or self.topic, event), *(outbox_values(t, e) for t, e in also)]
        n = len(args)
        values = ", ".join(
            f"(${n + 1 + 5 * i}::text, ${n + 2 + 5 * i}::text, ${n + 3 + 5 * i}::text, ${n + 4 + 5 * i}::bytea,"
            f" ${n + 5 + 5 * i}::jsonb)"
            for i in range(len(rows))
        )
        sql = (
            f"WITH {ctes}, _o AS ({_OUTBOX_INSERT} SELECT v.* FROM (VALUES {values}) v"
            f" WHERE EXISTS (SELECT 1 FROM {source}) RETURNING 1),"
            f" _n AS (SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM _o LIMIT 1)"
            f" SELECT {returning} FROM {source} LEFT JOIN _n ON true LIMIT 1"
        )
        return await self.conn.fetchrow(sql, *args, *(v for row in rows for v in row))

    async def record_handled(self, events: Sequence[Event]) -> set[object]:
        """Record events as handled in this transaction, in one statement; the ids that were not
        recorded before (a redelivered event, or a repeat within `events`, is not among them)."""
        rows = await self.conn.fetch(
            "INSERT INTO processed_events(event_id, event_name) SELECT * FROM unnest($1::uuid[], $2::text[])"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            [e.eventId for e in events],
            [e.eventName for e in events],
        )
        return {r["event_id"] for r in rows}
