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


async def add_to_outbox(conn: asyncpg.Connection, topic: str, event: Event) -> None:
    """Stage an event in the caller's transaction; it is published only if that transaction commits.
    The NOTIFY is delivered at commit too, and wakes the relay at once."""
    key = event.orderId or event.userId or str(event.eventId)
    await conn.execute(  # the row and the NOTIFY in one round trip
        "WITH o AS (INSERT INTO outbox(topic, key, event_name, payload, headers) VALUES ($1, $2, $3, $4, $5)"
        f" RETURNING 1) SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM o",
        topic,
        key,
        event.eventName,
        event.to_bytes(),
        orjson.dumps({"eventName": event.eventName, "correlationId": event.correlationId}).decode(),
    )


async def mark_processed(conn: asyncpg.Connection, event: Event) -> bool:
    """Record the event as handled in the caller's transaction; False when it already was."""
    row = await conn.fetchval(
        "INSERT INTO processed_events(event_id, event_name) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
        event.eventId,
        event.eventName,
    )
    return row is not None
