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
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from tinysaga.order import domain
from tinysaga.order.bootstrap import deps
from tinysaga.order.handlers import Begin
from tinysaga.order.repository import DeadLetterRepository, Row
from tinysaga.platform.settings import Settings
from tinysaga.platform.web import JSON, Identity, Problem, admin_user

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
    return [{**letter_json(r), "payload": r["payload"][:4096], "payloadEncoding": r["payload_encoding"]} for r in rows]


class ReplayFilter(BaseModel):
    """Which dead letters to replay (every field optional; an unknown field is refused, so that a
    misspelt filter does not replay everything)."""

    model_config = ConfigDict(extra="forbid")
    service: str | None = Field(None, min_length=1, max_length=64)
    eventName: str | None = Field(None, min_length=1, max_length=64)
    errorContains: str | None = Field(None, min_length=1, max_length=200)
    includeReplayed: StrictBool = False
    dryRun: StrictBool = True
    limit: StrictInt = Field(100, ge=1, le=500)


def letter_json(r: Row) -> dict[str, Any]:
    return {
        "id": r["id"],
        "service": r["service"],
        "eventName": r["event_name"],
        "error": r["error"],
        "sourceTopic": r["source_topic"],
        "sourcePartition": r["source_partition"],
        "sourceOffset": r["source_offset"],
        "key": r["message_key"],
        "receivedAt": r["received_at"].isoformat(),
        "replayedAt": r["replayed_at"].isoformat() if r["replayed_at"] else None,
        "replayCount": r["replay_count"],
    }


@router.post("/api/admin/dead-letters/replay")
async def replay_many(body: ReplayFilter, request: Request, _: Identity = Depends(admin_user)) -> JSON:
    """Replay the dead letters a filter selects, oldest first (`dryRun`, the default: only list
    them). Each is answered with `earlierReplays`, how often it was replayed before this call.
    200 for a dry run, 202 when they were put back."""
    f = domain.DeadLetterFilter(
        service=body.service,
        event_name=body.eventName,
        error_contains=body.errorContains,
        include_replayed=body.includeReplayed,
        limit=body.limit,
    )
    rows = await deps(request).replay_dead_letters(f, body.dryRun)
    letters = [{**letter_json(r), "earlierReplays": r["replay_count"]} for r in rows]
    answer = {"dryRun": body.dryRun, "matched": len(rows), "replayed": 0 if body.dryRun else len(rows)}
    return JSON({**answer, "deadLetters": letters}, status_code=200 if body.dryRun else 202)


@router.post("/api/admin/dead-letters/{dead_letter_id}/replay", status_code=202)
async def replay(
    request: Request, dead_letter_id: int = Path(ge=1, le=2**63 - 1), _: Identity = Depends(admin_user)
) -> dict[str, Any]:
    if await deps(request).replay_dead_letters.one(dead_letter_id) is None:
        raise Problem(404, "Not Found", "no such dead letter")
    log.info("dead letter %s replayed", dead_letter_id)
    return {"id": dead_letter_id, "replayed": True}
