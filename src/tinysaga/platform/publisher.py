"""Publish after commit (ADR 51): the process that committed outbox rows sends them to Kafka at
once, with its own idempotent producer (acks=all), and deletes them once Kafka has acknowledged
them. The outbox row is the durable record: a row whose sending fails, times out or is cut short
by a crash stays, and the relay (`platform.relay`) publishes it after a grace period. A row sent by
both is a duplicate that consumers drop by its eventId, as any redelivery.

A unit of work hands its rows over after its commit. Where a client is answered after it (an API
request), it waits (at most PUBLISH_WAIT) for Kafka's acknowledgement, so the client's next
request comes after its events are on the topic. A consumer does not wait: its sends are under way,
in order, and whatever it does next is sent after them by the same producer, while the events
others publish because of its own can only follow them. Acknowledged rows are deleted by one
statement for all those acknowledged by DELETE_AFTER after the oldest of them was handed over: each
delete is a transaction of its own, with its commit and WAL flush, which the outbox's row would
otherwise cost once more per event (ADR 51, "Later")."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from tinysaga.platform import tracing
from tinysaga.platform.settings import Settings
from tinysaga.platform.uow import Staged

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("tinysaga.publisher")

PUBLISH_WAIT = 2.0  # seconds a committed transaction waits for Kafka before leaving its rows to the relay
# Seconds after its rows were handed over (just after their commit) that an acknowledged batch is
# deleted, with every batch acknowledged meanwhile; one acknowledged later is deleted at once. The
# relay leaves a row alone for PUBLISH_WAIT + 1 s from its transaction's start: this leaves 1.5 s
# for that transaction's own length and a busy event loop before the relay could send it again.
DELETE_AFTER = 1.5


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The producer of the relay and of every publisher: idempotent, acks=all, no linger."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=0,
        request_timeout_ms=15000,
    )


async def send_row(
    producer: AIOKafkaProducer, topic: str, key: str, payload: bytes, headers: str, spans: list[Span]
) -> asyncio.Future[Any]:
    """Send one outbox row (`headers` as stored: JSON); Kafka's acknowledgement is the future
    returned. When tracing is on and the row was staged in a span, the send is a span of that trace
    (appended to `spans`, for the caller to end once Kafka answered) and the record's headers carry
    its context to the consumers (ADR 42)."""
    values = {k: str(v) for k, v in orjson.loads(headers).items()}
    if tracing.enabled and (span := tracing.start_publish(topic, key, values)) is not None:
        spans.append(span)
    return await producer.send(
        topic, value=payload, key=key.encode(), headers=[(k, v.encode()) for k, v in values.items()]
    )


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, pool: asyncpg.Pool) -> None:
        self.producer = producer
        self.pool = pool
        self.acked: list[int] = []
        self.oldest: float | None = None  # when the oldest of the acknowledged rows was handed over
        self._deleting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._closing = asyncio.Event()  # set by close(): what was acknowledged is deleted at once

    async def publish(self, rows: Sequence[Staged], *, confirm: bool = True) -> None:
        """Send the rows (in their order) and, with `confirm`, wait for Kafka's acknowledgement,
        at most PUBLISH_WAIT (an acknowledgement that comes later still deletes its rows); never
        raises: a row not acknowledged is left to the relay."""
        spans: list[Span] = []
        handed = asyncio.get_running_loop().time()
        try:
            sent = [await send_row(self.producer, r.topic, r.key, r.payload, r.headers, spans) for r in rows]
        except Exception as e:  # the producer stopped, a topic unknown: the relay's turn
            tracing.end_publish(spans, e)
            log.warning("outbox rows left to the relay: %s", e or type(e).__name__)
            return
        acked = asyncio.gather(*sent)
        self._pending.add(acked)
        acked.add_done_callback(functools.partial(self._done, [r.id for r in rows], spans, handed))
        if not confirm:
            return
        await asyncio.wait((acked,), timeout=PUBLISH_WAIT)
        if not acked.done():
            log.warning("outbox rows left to the relay: Kafka did not acknowledge them within %s s", PUBLISH_WAIT)

    def _done(self, ids: list[int], spans: list[Span], handed: float, acked: asyncio.Future[Any]) -> None:
        self._pending.discard(acked)
        if acked.cancelled() or acked.exception() is not None:
            error = acked.exception() if not acked.cancelled() else asyncio.CancelledError()
            tracing.end_publish(spans, error)
            log.warning("outbox rows left to the relay: %s", error or type(error).__name__)
            return
        tracing.end_publish(spans)
        self.acked += ids
        self.oldest = handed if self.oldest is None else min(self.oldest, handed)
        if self._deleting is None or self._deleting.done():
            self._deleting = asyncio.create_task(self._delete_acked())

    async def _delete_acked(self) -> None:
        """Delete what was acknowledged, DELETE_AFTER after the oldest of it was handed over (at
        once when the publisher is closing), in one statement for all that came meanwhile; a delete
        that fails leaves its rows to the relay (sent twice, dropped by the consumers)."""
        loop = asyncio.get_running_loop()
        while self.acked:
            assert self.oldest is not None  # set with every acknowledged row
            wait = self.oldest + DELETE_AFTER - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)
            ids, self.acked, self.oldest = self.acked, [], None
            try:
                await self.pool.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)
            except Exception as e:
                log.warning("could not delete %d published outbox rows: %s", len(ids), e)

    async def close(self) -> None:
        """Let the sends under way finish, and delete what they had acknowledged at once."""
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._closing.set()
        if self._deleting is not None:
            await asyncio.gather(self._deleting, return_exceptions=True)
