"""The outbox relay: publishes what the services did not (ADR 51).

A service publishes the rows it commits itself, at once (`platform.publisher`); the relay is for
the rows left behind: a process killed between its commit and Kafka's acknowledgement, a broker
that did not answer in time, a process without a publisher. One task per database looks every
`POLL` seconds for rows older than `GRACE` (so it does not race a publisher still at work) and
publishes them in id order. A session advisory lock makes it the only relay of that database even
if a second one is started. Rows are deleted only after Kafka acknowledged them (idempotent
producer, acks=all): a crash in between re-publishes them, and consumers drop the duplicates by
eventId. When tracing is on (ADR 42), the send of a row staged inside a span is a span of that
trace, as in the publisher.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

import asyncpg
import uvloop
from aiokafka import AIOKafkaProducer

from tinysaga.platform import tracing
from tinysaga.platform.logging import setup_logging
from tinysaga.platform.publisher import PUBLISH_WAIT, make_producer, send_row
from tinysaga.platform.secrets import SERVICES_WITH_DB, database_dsn
from tinysaga.platform.settings import Settings, get_settings

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("tinysaga.relay")

BATCH = 500
POLL = 1.0  # seconds between looks at an outbox
GRACE = PUBLISH_WAIT + 1.0  # seconds a row is left to the publisher of the process that wrote it
_LEADER_LOCK = 724_211_002


async def publish_batch(conn: asyncpg.Connection, producer: AIOKafkaProducer, grace: float = GRACE) -> int:
    """Publish up to BATCH rows older than `grace` seconds, in id order; the number published."""
    rows = await conn.fetch(
        "SELECT id, topic, key, payload, headers::text AS headers FROM outbox"
        " WHERE created_at < now() - $2 * interval '1 second' ORDER BY id LIMIT $1",
        BATCH,
        grace,
    )
    if not rows:
        return 0
    spans: list[Span] = []  # the send spans (tracing on, rows staged in a span), ended once Kafka answered
    try:
        futures = [await send_row(producer, r["topic"], r["key"], r["payload"], r["headers"], spans) for r in rows]
        await asyncio.gather(*futures)
    except BaseException as e:
        tracing.end_publish(spans, e)
        raise
    tracing.end_publish(spans)

    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
    return len(rows)


async def relay_database(settings: Settings, service: str, producer: AIOKafkaProducer) -> None:
    dsn = database_dsn(settings, service)
    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn)
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
                await asyncio.sleep(1.0)
            log.info("relaying outbox", extra={"database": service})
            while True:
                while await publish_batch(conn, producer) == BATCH:
                    pass
                await asyncio.sleep(POLL)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay error; reconnecting", extra={"database": service})
            await asyncio.sleep(1.0)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()


async def main() -> None:
    settings = get_settings()
    setup_logging("relay", settings.log_level)
    tracing.setup("relay", settings)
    producer = make_producer(settings)
    while True:
        try:
            await producer.start()
            break
        except Exception as e:  # Kafka not up yet
            log.warning("kafka not reachable yet: %s", e)
            await asyncio.sleep(1.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(relay_database(settings, s, producer)) for s in SERVICES_WITH_DB]
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await producer.stop()


if __name__ == "__main__":
    uvloop.run(main())  # the services' event loop (uvicorn's)
