"""How fetches wait on the real broker.

- A partition's next records are fetched as soon as its last ones are taken, even when handling
  them took long: a record that comes after a slow one is handled at once, not after the broker's
  fetch wait (aiokafka left the partition out of a fetch that then waited 5 s on a quiet topic;
  `hold_prefetched`).
- A gathering consumer's fetches wait at the broker while records come (`fetch_at_broker`): records
  sent 20 ms apart reach it a few at a time, not one fetch each; set back, the first record is
  answered at once again."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support import run_sync
from tinysaga.contracts.events import Event, make_event
from tinysaga.platform.consumer import ConsumerLoop, HandlerContext, fetch_at_broker
from tinysaga.platform.secrets import superuser_dsn
from tinysaga.platform.settings import Settings

SLOW = 1.0  # seconds the first record's handler takes


async def _until(pred, seconds: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not pred():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def _latency_after_a_slow_record(settings: Settings) -> float:
    topic = f"prefetch-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=settings.replication_factor)])
    handled: dict[str, float] = {}

    async def slow(event: Event, ctx: HandlerContext) -> None:
        handled["SLOW started"] = time.monotonic()
        await asyncio.sleep(SLOW)

    async def fast(event: Event, ctx: HandlerContext) -> None:
        handled[event.correlationId] = time.monotonic()

    pool = await asyncpg.create_pool(superuser_dsn(settings, "tinysaga_order"), min_size=1, max_size=1)
    loop = ConsumerLoop(settings, "prefetch-test", pool, {"SLOW": slow, "FAST": fast}, (topic,), group_id=topic)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()

    async def send(name: str, tag: str) -> float:
        event = make_event(name, correlation_id=tag)
        await producer.send_and_wait(topic, event.to_bytes(), partition=0, headers=[("eventName", name.encode())])
        return time.monotonic()

    task = asyncio.create_task(loop.run())
    try:
        await _until(lambda: loop.connected and loop.consumer and loop.consumer.assignment(), 60, "no assignment")
        consumer = loop.consumer
        assert consumer is not None
        for tp in consumer.assignment():  # the topic is new and empty: its position on each partition
            await consumer.position(tp)
        await send("SLOW", "slow")
        await _until(lambda: "SLOW started" in handled, 30, "the slow record was not handled")
        # fetched while the slow one is handled, and left in the buffer for most of SLOW
        await send("FAST", "during")
        await _until(lambda: "during" in handled, 30, "the record sent during the slow one was not handled")
        await asyncio.sleep(0.3)
        sent = await send("FAST", "after")
        await _until(lambda: "after" in handled, 30, "the record sent after was not handled")
        return handled["after"] - sent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await pool.close()
        await admin.delete_topics([topic])
        await admin.close()


def test_a_record_after_a_slow_one_is_fetched_at_once(gateway: str, settings: Settings) -> None:
    # without the hold, it waited for a fetch of the other partition: about fetch_max_wait_ms (5 s)
    assert run_sync(_latency_after_a_slow_record(settings)) < 1.5


async def _arrivals(settings: Settings) -> tuple[list[int], float]:
    """Ten records sent 20 ms apart to a consumer whose fetches wait 1 s at the broker: the
    number taken by each poll that brought any; then, set back, how long one more record took."""
    topic = f"gather-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=settings.replication_factor)])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, group_id=topic, auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    try:
        await _until(lambda: bool(consumer.assignment()), 60, "no assignment")
        await consumer.getmany(timeout_ms=200)  # the group joined, the first fetch under way
        assert fetch_at_broker(consumer, 1.0)
        # the fetch already at the broker is an idle one: the first record answers it
        await producer.send_and_wait(topic, b"first")
        assert await consumer.getmany(timeout_ms=5000)
        sizes: list[int] = []

        async def take() -> None:  # polled all along, as the consumer loop does
            while sum(sizes) < 10:
                got = await consumer.getmany(timeout_ms=5000)
                assert got, "the records sent were not fetched"
                sizes.append(sum(len(r) for r in got.values()))

        taking = asyncio.create_task(take())
        for _ in range(10):
            await producer.send_and_wait(topic, b"x")
            await asyncio.sleep(0.02)
        await asyncio.wait_for(taking, 10)
        assert fetch_at_broker(consumer, None)
        # the fetch at the broker now is a held one, which only its 1 s ends (nothing to wait for
        # but the time); the one after it is an idle one
        await asyncio.sleep(1.3)
        sent = time.monotonic()
        await producer.send_and_wait(topic, b"last")
        assert await consumer.getmany(timeout_ms=5000)
        return sizes, time.monotonic() - sent
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()


def test_a_gathering_consumer_is_answered_a_few_records_at_a_time(gateway: str, settings: Settings) -> None:
    sizes, last = run_sync(_arrivals(settings))
    # 10 records over about 0.25 s, with the broker holding each fetch 1 s: one or two answers
    # (without it, each record was a fetch of its own: ten); set back, the last comes at once
    # (still held, it would wait the second)
    assert len(sizes) <= 3, sizes
    assert last < 0.5
