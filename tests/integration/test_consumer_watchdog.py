"""The consumer loop restarts a consumer whose polls bring nothing while records wait in its
partitions (what aiokafka does when it loses its group coordinator for good after a broker
restart), on the real broker: here the stall is made by pausing the consumer's partitions."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support import run_sync
from tinysaga.platform.consumer import ConsumerLoop
from tinysaga.platform.secrets import superuser_dsn
from tinysaga.platform.settings import Settings


async def _until(pred, seconds: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not pred():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def _stall_and_recover(settings: Settings) -> tuple[int, int]:
    # a topic and a group of its own (the saga topic and its groups are left alone), and a loop that
    # handles no event: records are read and skipped
    topic = f"watchdog-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    pool = await asyncpg.create_pool(superuser_dsn(settings, "tinysaga_order"), min_size=1, max_size=1)
    loop = ConsumerLoop(settings, "watchdog-test", pool, {}, (topic,), group_id=topic)
    loop.idle_wait = 1.0
    task = asyncio.create_task(loop.run())
    try:
        await _until(lambda: loop.connected and loop.consumer and loop.consumer.assignment(), 60, "no assignment")
        stuck = loop.consumer
        assert stuck is not None
        # its position on every partition (the topic is new and empty), then no more fetches
        for tp in stuck.assignment():
            await stuck.position(tp)
        stuck.pause(*stuck.assignment())
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for p in sorted(tp.partition for tp in stuck.assignment()):
                await producer.send_and_wait(topic, b"{}", partition=p, headers=[("eventName", b"PROBE")])
        finally:
            await producer.stop()
        await _until(lambda: loop.consumer is not stuck, 60, "the stalled consumer was not restarted")
        await _until(lambda: loop.connected and loop.consumer and loop.consumer.assignment(), 60, "no new assignment")
        fresh = loop.consumer
        assert fresh is not None
        # the new consumer is not stalled: it reads up to the end
        parts = list(fresh.assignment())
        ends = await fresh.end_offsets(parts)
        deadline = time.monotonic() + 30
        while [tp for tp in parts if await fresh.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "the new consumer does not read"
            await asyncio.sleep(0.5)
        return id(stuck), id(fresh)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
        await admin.delete_topics([topic])
        await admin.close()


def test_a_consumer_that_gets_nothing_while_records_wait_is_restarted(gateway: str, settings: Settings) -> None:
    old, new = run_sync(_stall_and_recover(settings))
    assert old != new
