"""Database pools (asyncpg) and the outbox write that goes with a state change."""

from __future__ import annotations

import asyncpg
import orjson

from tinysaga.contracts.events import Event
from tinysaga.platform.secrets import database_dsn
from tinysaga.platform.settings import Settings

OUTBOX_CHANNEL = "tinysaga_outbox"


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Pool connections never carry session state (LISTEN, advisory locks and SET live on
    dedicated connections), so the default reset query (RESET ALL; CLOSE ALL; UNLISTEN *; advisory
    unlock), one more round trip on every release, is skipped. asyncpg still rolls back a
    transaction left open."""


async def create_pool(settings: Settings, service: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        database_dsn(settings, service), min_size=min_size, max_size=max_size, command_timeout=30, reset=_keep_session
    )


OUTBOX_INSERT = "INSERT INTO outbox(topic, key, event_name, payload, headers)"


def outbox_values(topic: str, event: Event) -> tuple[str, str, str, bytes, str]:
    """The outbox row of an event: topic, key (the order, else the user), name, payload, headers."""
    key = event.orderId or event.userId or str(event.eventId)
    headers = orjson.dumps({"eventName": event.eventName, "correlationId": event.correlationId}).decode()
    return topic, key, event.eventName, event.to_bytes(), headers


def with_outbox(change: str, first: int) -> str:
    """One statement that makes a change and stages its event: `change` is an INSERT/UPDATE ...
    RETURNING 1 (its parameters first); the event's five outbox values follow from `$first`; the
    NOTIFY that wakes the relay goes with the row. Nothing is staged if the change writes no row."""
    values = ", ".join(f"${first + i}" for i in range(5))
    return (
        f"WITH c AS ({change}), o AS ({OUTBOX_INSERT} SELECT {values} FROM c LIMIT 1 RETURNING 1)"
        f" SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM o"
    )


async def add_to_outbox(conn: asyncpg.Connection, topic: str, event: Event) -> None:
    """Stage an event in the caller's transaction; it is published only if that transaction commits.
    The NOTIFY is delivered at commit too, and wakes the relay at once."""
    await conn.execute(  # the row and the NOTIFY in one round trip
        f"WITH o AS ({OUTBOX_INSERT} VALUES ($1, $2, $3, $4, $5) RETURNING 1)"
        f" SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM o",
        *outbox_values(topic, event),
    )


async def mark_processed(conn: asyncpg.Connection, event: Event) -> bool:
    """Record the event as handled in the caller's transaction; False when it already was."""
    return bool(await mark_processed_many(conn, [event]))


async def mark_processed_many(conn: asyncpg.Connection, events: list[Event]) -> set[object]:
    """Record a batch of events as handled in one statement; the ids that were not recorded yet."""
    rows = await conn.fetch(
        "INSERT INTO processed_events(event_id, event_name) SELECT * FROM unnest($1::uuid[], $2::text[])"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        [e.eventId for e in events],
        [e.eventName for e in events],
    )
    return {r["event_id"] for r in rows}
