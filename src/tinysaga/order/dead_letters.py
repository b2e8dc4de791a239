"""The operator's view of the dead-letter topic: Order keeps a copy of it to list, and replays a
message by putting its original bytes back on the saga topic (through the outbox), for the service
that dead-lettered it only. The SQL is in `repository.DeadLetterRepository`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from fastapi import APIRouter, Depends, Path, Query, Request

from tinysaga.order.bootstrap import deps
from tinysaga.order.handlers import Begin
from tinysaga.order.repository import DeadLetterRepository
from tinysaga.platform.settings import Settings
from tinysaga.platform.web import Identity, Problem, admin_user

log = logging.getLogger("tinysaga.order.dlt")
router = APIRouter()


def collector(settings: Settings, begin: Begin) -> Callable[[], Awaitable[None]]:
    """The background task that copies the dead-letter topic into `dead_letters` (one transaction
    per partition of a poll; offsets committed after)."""

    async def dead_letter_collector() -> None:
        consumer = AIOKafkaConsumer(
            settings.dead_letter_topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id="order-dlt",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # idle, it sleeps: the broker holds a fetch up to 5 s (a record ends it at once), and the
            # fetcher's own wake-up is 2 s instead of 200 ms (as in the saga consumers)
            fetch_max_wait_ms=5000,
            consumer_timeout_ms=2000,
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=30_000)
                for records in batches.values():
                    async with begin() as uow:
                        repo = DeadLetterRepository.of(uow)
                        for r in records:
                            try:
                                d = orjson.loads(r.value)
                            except orjson.JSONDecodeError:
                                d = {"error": "unreadable dead letter", "payload": "", "payloadEncoding": "utf-8"}
                            await repo.add(r.partition, r.offset, d)
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()

    return dead_letter_collector


@router.get("/api/admin/dead-letters")
async def list_dead_letters(
    request: Request, limit: int = Query(100, ge=1, le=500), _: Identity = Depends(admin_user)
) -> list[dict[str, Any]]:
    rows = await deps(request).dead_letters.latest(limit)
    return [
        {
            "id": r["id"],
            "service": r["service"],
            "error": r["error"],
            "sourceTopic": r["source_topic"],
            "sourcePartition": r["source_partition"],
            "sourceOffset": r["source_offset"],
            "key": r["message_key"],
            "payload": r["payload"][:4096],
            "payloadEncoding": r["payload_encoding"],
            "receivedAt": r["received_at"].isoformat(),
            "replayedAt": r["replayed_at"].isoformat() if r["replayed_at"] else None,
        }
        for r in rows
    ]


@router.post("/api/admin/dead-letters/{dead_letter_id}/replay", status_code=202)
async def replay(
    request: Request, dead_letter_id: int = Path(ge=1, le=2**63 - 1), _: Identity = Depends(admin_user)
) -> dict[str, Any]:
    async with deps(request).begin() as uow:
        repo = DeadLetterRepository.of(uow)
        row = await repo.get_for_update(dead_letter_id)
        if row is None:
            raise Problem(404, "Not Found", "no such dead letter")
        await repo.replay(row)
    log.info("dead letter %s replayed", dead_letter_id)
    return {"id": dead_letter_id, "replayed": True}
