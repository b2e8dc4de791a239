"""Notification routes (the inbox, the sink's mails for the admin) and its handlers: record a
notification per (order, type, channel) from the saga events, then deliver each with retries."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request

from tinysaga.contracts import events as ev
from tinysaga.notification.adapters import ChannelDown, EmailSender, SmsProvider, Undeliverable
from tinysaga.notification.domain import notification_for
from tinysaga.platform.consumer import Handler, HandlerContext
from tinysaga.platform.service import Runtime
from tinysaga.platform.service import runtime as _rt
from tinysaga.platform.web import Identity, admin_user, current_user

log = logging.getLogger("tinysaga.notification")
router = APIRouter()
NEW_CHANNEL = "tinysaga_notification_new"
DELIVERY_BATCH = 50


def _json(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "notificationId": str(r["notification_id"]),
        "orderId": r["order_id"],
        "channel": r["channel"],
        "type": r["type"],
        "message": r["message"],
        "status": r["status"],
        "createdAt": r["created_at"].isoformat(),
    }


@router.get("/api/notifications")
async def inbox(
    request: Request, limit: int = Query(100, ge=1, le=500), user: Identity = Depends(current_user)
) -> list[dict[str, Any]]:
    rows = await _rt(request).pool.fetch(
        "SELECT * FROM notifications WHERE user_id=$1 ORDER BY created_at DESC, channel LIMIT $2", user.user_id, limit
    )
    return [_json(r) for r in rows]


@router.get("/api/admin/notifications/mail")
async def sink_mail(
    request: Request, limit: int = Query(50, ge=1, le=500), _: Identity = Depends(admin_user)
) -> list[dict[str, Any]]:
    """The mails the local SMTP sink received, newest first."""
    folder = _rt(request).settings.home / "mail"
    files = sorted(folder.glob("*.eml"), reverse=True)[:limit] if folder.exists() else []
    out = []
    for f in files:
        msg = BytesParser(policy=policy.default).parsebytes(f.read_bytes())
        body = msg.get_body(("plain",))
        out.append(
            {"file": f.name, "to": msg["To"], "subject": msg["Subject"], "body": body.get_content() if body else ""}
        )
    return out


@router.get("/api/admin/notifications/sms")
async def sms_log(
    request: Request, limit: int = Query(50, ge=1, le=500), _: Identity = Depends(admin_user)
) -> list[dict[str, Any]]:
    rows = await _rt(request).pool.fetch("SELECT * FROM sms_messages ORDER BY id DESC LIMIT $1", limit)
    return [{"to": r["to_number"], "body": r["body"], "createdAt": r["created_at"].isoformat()} for r in rows]


def handlers(rt: Runtime) -> dict[str, Handler]:
    async def on_saga_event(event: ev.Event, ctx: HandlerContext) -> None:
        what = notification_for(event)
        async with ctx.transaction() as conn:
            if what is None or not event.orderId or not event.userId:
                return
            kind, message = what
            await conn.execute(  # both channels' rows, and the NOTIFY that wakes the deliverer
                "WITH n AS (INSERT INTO notifications(notification_id, user_id, order_id, type, channel, message)"
                " VALUES ($1,$3,$4,$5,'EMAIL',$6), ($2,$3,$4,$5,'SMS',$6)"
                " ON CONFLICT (order_id, type, channel) DO NOTHING RETURNING 1)"
                f" SELECT pg_notify('{NEW_CHANNEL}', '') FROM n LIMIT 1",
                uuid.uuid4(),
                uuid.uuid4(),
                event.userId,
                event.orderId,
                kind,
                message,
            )

    async def on_user_registered(event: ev.Event, ctx: HandlerContext) -> None:
        async with ctx.transaction() as conn:
            await conn.execute(
                "INSERT INTO contacts(user_id, email, phone, name) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT (user_id) DO UPDATE SET email=EXCLUDED.email, phone=EXCLUDED.phone, name=EXCLUDED.name",
                event.userId,
                event.email,
                event.phone,
                event.name,
            )

    names = (*ev.STEP_OUTCOMES, ev.ORDER_TIMED_OUT)
    return {**{n: on_saga_event for n in names}, ev.USER_REGISTERED: on_user_registered}


async def deliver_due(rt: Runtime, email: EmailSender, sms: SmsProvider) -> int:
    """Send the notifications that are due. Each row stands alone: a channel that is down is retried
    with backoff and never holds up the other channel."""
    async with rt.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT n.*, c.user_id IS NOT NULL AS known, c.email, c.phone FROM notifications n"
            " LEFT JOIN contacts c USING (user_id)"
            " WHERE n.status='PENDING' AND n.next_attempt_at <= now() ORDER BY n.next_attempt_at LIMIT $1"
            " FOR UPDATE OF n SKIP LOCKED",
            DELIVERY_BATCH,
        )
        sent: list[object] = []
        skipped: list[tuple[object, str]] = []
        for r in rows:
            to = r["email"] if r["channel"] == "EMAIL" else r["phone"]
            if not to:
                # The contact comes on another topic and may not be here yet; once it is, a
                # missing address (a user without a phone number) means there is nothing to send.
                if not r["known"] and r["attempts"] < 10:
                    await _retry_later(conn, r, "no contact yet")
                else:
                    missing = "email address" if r["channel"] == "EMAIL" else "phone number"
                    skipped.append((r["notification_id"], f"no {missing}" if r["known"] else "no contact"))
                continue
            try:
                if r["channel"] == "EMAIL":
                    await email.send(to, f"Tiny-Saga: {r['type'].replace('_', ' ').lower()}", r["message"])
                else:
                    await sms.send(conn, r["notification_id"], to, r["message"])
            except ChannelDown as e:
                await _retry_later(conn, r, str(e))
                continue
            except Undeliverable as e:
                skipped.append((r["notification_id"], str(e)[:500]))
                continue
            sent.append(r["notification_id"])
        if sent:
            await conn.execute(
                "UPDATE notifications SET status='SENT', sent_at=now(), attempts=attempts+1"
                " WHERE notification_id = ANY($1::uuid[])",
                sent,
            )
        if skipped:
            await conn.executemany(
                "UPDATE notifications SET status='SKIPPED', last_error=$2 WHERE notification_id=$1", skipped
            )
    return len(rows)


async def _retry_later(conn: asyncpg.Connection, r: asyncpg.Record, error: str) -> None:
    pause = timedelta(seconds=min(60.0, 0.5 * 2 ** r["attempts"]))
    await conn.execute(
        "UPDATE notifications SET attempts=attempts+1, last_error=$2, next_attempt_at=now()+$3"
        " WHERE notification_id=$1",
        r["notification_id"],
        error[:500],
        pause,
    )


def deliverer(rt: Runtime, email: EmailSender, sms: SmsProvider):  # noqa: ANN201 - a task factory
    async def notification_deliverer() -> None:
        wake = asyncio.Event()
        conn = await asyncpg.connect(rt.dsn)
        await conn.add_listener(NEW_CHANNEL, lambda *_: wake.set())
        try:
            while True:
                wake.clear()
                while await deliver_due(rt, email, sms) == DELIVERY_BATCH:
                    pass
                # sleep until a new notification (NOTIFY) or the next retry falls due
                due = await rt.pool.fetchval(
                    "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM notifications WHERE status='PENDING'"
                )
                try:
                    await asyncio.wait_for(wake.wait(), min(5.0, max(0.05, float(due))) if due is not None else 5.0)
                except TimeoutError:
                    # Quiet for a while: let the SMTP connection go. While mail keeps coming it is
                    # kept open across rounds (a new connection per round was most of the cost of
                    # an email at a steady trickle, on both ends).
                    await email.close()
        finally:
            await email.close()
            await conn.close()

    return notification_deliverer
