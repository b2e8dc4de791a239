"""The operator's view of the dead-letter topic: Order keeps a copy of it to list, and replays a
message by putting its original bytes back on the saga topic (through the outbox), for the service
that dead-lettered it only."""

from __future__ import annotations

import base64
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from fastapi import APIRouter, Depends, Path, Query, Request

from tinysaga.platform.db import OUTBOX_CHANNEL
from tinysaga.platform.service import Runtime
from tinysaga.platform.web import Identity, Problem, admin_user

log = logging.getLogger("tinysaga.order.dlt")
router = APIRouter()


def collector(rt: Runtime):  # noqa: ANN201 - a task factory
    async def dead_letter_collector() -> None:
        consumer = AIOKafkaConsumer(
            rt.settings.dead_letter_topic,
            bootstrap_servers=rt.settings.kafka_bootstrap,
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
                    async with rt.pool.acquire() as conn, conn.transaction():
                        for r in records:
                            try:
                                d = orjson.loads(r.value)
                            except orjson.JSONDecodeError:
                                d = {"error": "unreadable dead letter", "payload": "", "payloadEncoding": "utf-8"}
                            await conn.execute(
                                "INSERT INTO dead_letters(dlt_partition, dlt_offset, service, error, source_topic,"
                                " source_partition, source_offset, message_key, payload, payload_encoding)"
                                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT DO NOTHING",
                                r.partition,
                                r.offset,
                                str(d.get("service", "?")),
                                str(d.get("error", "")),
                                str(d.get("topic", "")),
                                int(d.get("partition", -1)),
                                int(d.get("offset", -1)),
                                str(d.get("key", "")),
                                str(d.get("payload", "")),
                                str(d.get("payloadEncoding", "utf-8")),
                            )
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()

    return dead_letter_collector


@router.get("/api/admin/dead-letters")
async def list_dead_letters(
    request: Request, limit: int = Query(100, ge=1, le=500), _: Identity = Depends(admin_user)
) -> list[dict[str, Any]]:
    rows = await request.app.state.rt.pool.fetch("SELECT * FROM dead_letters ORDER BY id DESC LIMIT $1", limit)
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
    rt: Runtime = request.app.state.rt
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM dead_letters WHERE id=$1 FOR UPDATE", dead_letter_id)
        if row is None:
            raise Problem(404, "Not Found", "no such dead letter")
        raw = base64.b64decode(row["payload"]) if row["payload_encoding"] == "base64" else row["payload"].encode()
        await conn.execute(
            "INSERT INTO outbox(topic, key, event_name, payload, headers) VALUES ($1,$2,'REPLAY',$3,$4)",
            row["source_topic"] or rt.settings.topic,
            row["message_key"] or str(dead_letter_id),
            raw,
            # only the service that dead-lettered it takes it again (the others had handled or
            # skipped it already)
            orjson.dumps({"replayOf": str(dead_letter_id), "replayFor": row["service"]}).decode(),
        )
        await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
        await conn.execute("UPDATE dead_letters SET replayed_at=now() WHERE id=$1", dead_letter_id)
    log.info("dead letter %s replayed", dead_letter_id)
    return {"id": dead_letter_id, "replayed": True}
