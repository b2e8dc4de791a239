"""The outbox relay: publishes each service database's outbox to Kafka, in commit order.

One task per database. It is woken by the NOTIFY that the writing transaction sends at commit (no
polling interval on the saga path) and also looks every `FALLBACK_POLL` seconds in case a
notification was missed across a reconnect. A session advisory lock makes it the only publisher of
that database even if a second relay is started. Rows are deleted only after Kafka acknowledged
them (idempotent producer, acks=all): a crash in between re-publishes them, and consumers drop the
duplicates by eventId. When tracing is on (ADR 42), the publish of a row staged inside a span is a
span of that trace, and the record's headers carry its context to the consumers.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from tinysaga.platform import tracing
from tinysaga.platform.logging import setup_logging
from tinysaga.platform.secrets import SERVICES_WITH_DB, database_dsn
from tinysaga.platform.settings import Settings, get_settings
from tinysaga.platform.uow import OUTBOX_CHANNEL

log = logging.getLogger("tinysaga.relay")

BATCH = 500
FALLBACK_POLL = 5.0
_LEADER_LOCK = 724_211_002


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=0,
        request_timeout_ms=15000,
    )


async def publish_batch(conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
    rows = await conn.fetch("SELECT id, topic, key, payload, headers FROM outbox ORDER BY id LIMIT $1", BATCH)
    if not rows:
        return 0
    spans = []  # the publish spans (tracing on, rows staged in a span), ended once Kafka answered
    try:
        futures = []
        for r in rows:
            headers = {k: str(v) for k, v in orjson.loads(r["headers"]).items()}
            if tracing.enabled and (span := tracing.start_publish(r["topic"], r["key"], headers)) is not None:
                spans.append(span)
            futures.append(
                await producer.send(
                    r["topic"],
                    value=r["payload"],
                    key=r["key"].encode(),
                    headers=[(k, v.encode()) for k, v in headers.items()],
                )
            )
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
            wake = asyncio.Event()
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_, w=wake: w.set())
            log.info("relaying outbox", extra={"database": service})
            while True:
                wake.clear()
                while await publish_batch(conn, producer) == BATCH:
                    pass
                try:
                    await asyncio.wait_for(wake.wait(), FALLBACK_POLL)
                except TimeoutError:
                    pass
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
    asyncio.run(main())
