"""Notification routes: the user's inbox, for the admin the sink's mails and the SMS log, and
(internal) what it did for an order."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request

from tinysaga.contracts import records, routes
from tinysaga.notification.domain import record_of
from tinysaga.platform.service import runtime
from tinysaga.platform.web import Identity, admin_user, current_user, uuid_in_path

if TYPE_CHECKING:
    from tinysaga.notification.bootstrap import NotificationDeps

router = APIRouter()


def deps(request: Request) -> NotificationDeps:
    """The service's dependencies (built by its bootstrap)."""
    return runtime(request).deps


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
    return [_json(r) for r in await deps(request).notifications.inbox(user.user_id, limit)]


@router.get("/api/admin/notifications/mail")
async def sink_mail(
    request: Request, limit: int = Query(50, ge=1, le=500), _: Identity = Depends(admin_user)
) -> list[dict[str, Any]]:
    """The mails the local SMTP sink received, newest first."""
    folder = deps(request).mail_folder
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
    rows = await deps(request).notifications.sms_log(limit)
    return [{"to": r["to_number"], "body": r["body"], "createdAt": r["created_at"].isoformat()} for r in rows]


@router.get(routes.ORDER_RECORDS)
async def order_records(orderId: str, request: Request) -> dict[str, Any]:
    """What Notification did for the order: each notification (in the inbox) and what became of its
    email or SMS. 422 for an id that is not a UUID."""
    order_id = str(uuid_in_path(orderId, "orderId"))
    rows = await deps(request).notifications.of_order(order_id)
    found = [
        record_of(r["type"], r["channel"], r["status"], r["message"], r["created_at"], r["sent_at"], r["last_error"])
        for r in rows
    ]
    return records.answer("notification", order_id, found)
