"""All of Notification's SQL: notifications, contacts, sms_messages, and the deliverer's queries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg

from tinysaga.contracts.ids import new_id
from tinysaga.notification.domain import EMAIL, SMS, Contact, Wanted


class NotificationRepository:
    """Built on a pool (the inbox, the admin's SMS log, and `transaction()` for a delivery round) or
    on a connection in a transaction (a handler's unit of work, a delivery round)."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self.db = db

    @classmethod
    def of(cls, uow: Any) -> NotificationRepository:
        """The repository of a handler's unit of work (`PgUnitOfWork`)."""
        return cls(uow.conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[NotificationRepository]:
        """A repository on a connection of the pool, in a transaction of its own."""
        assert isinstance(self.db, asyncpg.Pool)
        async with self.db.acquire() as conn, conn.transaction():
            yield NotificationRepository(conn)

    # ---- the handlers ----------------------------------------------------------------------------

    async def add_notifications(self, wanted: Sequence[Wanted]) -> bool:
        """Both channels' rows of each notification wanted, in one statement (a batch's, ADR 70), as
        if added one after the other: a row the order has already (its order, type and channel) is
        left as it is, and a notification whose `unless` type the order has, in the table or
        earlier in `wanted`, is not added. Whether a PENDING row was added (one for the deliverer)."""
        if not wanted:
            return False
        rows = await self.db.fetch(
            "WITH v AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],"
            " $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) WITH ORDINALITY"
            " AS v(email_id, sms_id, user_id, order_id, type, message, unless_type, email_status, email_error,"
            " sms_status, sms_error, n)),"
            " k AS (SELECT * FROM v WHERE v.unless_type IS NULL OR NOT ("
            " EXISTS (SELECT 1 FROM notifications x WHERE x.order_id = v.order_id AND x.type = v.unless_type)"
            " OR EXISTS (SELECT 1 FROM v w WHERE w.order_id = v.order_id AND w.type = v.unless_type AND w.n < v.n)))"
            " INSERT INTO notifications(notification_id, user_id, order_id, type, channel, message, status, last_error)"
            " SELECT email_id, user_id, order_id, type, 'EMAIL', message, email_status, email_error FROM k"
            " UNION ALL SELECT sms_id, user_id, order_id, type, 'SMS', message, sms_status, sms_error FROM k"
            " ON CONFLICT (order_id, type, channel) DO NOTHING RETURNING status",
            [new_id() for _ in wanted],
            [new_id() for _ in wanted],
            [w.user_id for w in wanted],
            [w.order_id for w in wanted],
            [w.kind for w in wanted],
            [w.message for w in wanted],
            [w.unless for w in wanted],
            ["SKIPPED" if EMAIL in w.skipped else "PENDING" for w in wanted],
            [w.skipped.get(EMAIL) for w in wanted],
            ["SKIPPED" if SMS in w.skipped else "PENDING" for w in wanted],
            [w.skipped.get(SMS) for w in wanted],
        )
        return any(r["status"] == "PENDING" for r in rows)

    async def contacts(self, user_ids: Sequence[str]) -> dict[str, Contact]:
        """The email and phone of each of these users whose contact is known, by user."""
        rows = await self.db.fetch(
            "SELECT user_id, email, phone FROM contacts WHERE user_id = ANY($1::text[])", user_ids
        )
        return {r["user_id"]: Contact(r["email"], r["phone"]) for r in rows}

    async def remember_contact(
        self, user_id: str | None, email: str | None, phone: str | None, name: str | None
    ) -> None:
        """The user's contact, inserted or replaced."""
        await self.db.execute(
            "INSERT INTO contacts(user_id, email, phone, name) VALUES ($1,$2,$3,$4)"
            " ON CONFLICT (user_id) DO UPDATE SET email=EXCLUDED.email, phone=EXCLUDED.phone, name=EXCLUDED.name",
            user_id,
            email,
            phone,
            name,
        )

    # ---- the routes ------------------------------------------------------------------------------

    async def inbox(self, user_id: str, limit: int) -> list[asyncpg.Record]:
        """A user's notifications, newest first."""
        return await self.db.fetch(
            "SELECT * FROM notifications WHERE user_id=$1 ORDER BY created_at DESC, channel LIMIT $2", user_id, limit
        )

    async def of_order(self, order_id: str) -> list[asyncpg.Record]:
        """One order's notifications (both channels of each type), oldest first."""
        return await self.db.fetch(
            "SELECT * FROM notifications WHERE order_id=$1 ORDER BY created_at, channel", order_id
        )

    async def sms_log(self, limit: int) -> list[asyncpg.Record]:
        """The SMS the recording provider kept, newest first."""
        return await self.db.fetch("SELECT * FROM sms_messages ORDER BY id DESC LIMIT $1", limit)

    # ---- the deliverer ---------------------------------------------------------------------------

    async def lock_due(self, limit: int) -> list[asyncpg.Record]:
        """Pending notifications that are due, oldest due first, with their user's contact (`known`,
        `email`, `phone`); locked, skipping those another deliverer holds."""
        return await self.db.fetch(
            "SELECT n.*, c.user_id IS NOT NULL AS known, c.email, c.phone FROM notifications n"
            " LEFT JOIN contacts c USING (user_id)"
            " WHERE n.status='PENDING' AND n.next_attempt_at <= now() ORDER BY n.next_attempt_at LIMIT $1"
            " FOR UPDATE OF n SKIP LOCKED",
            limit,
        )

    async def mark_sent(self, ids: Sequence[object]) -> None:
        await self.db.execute(
            "UPDATE notifications SET status='SENT', sent_at=now(), attempts=attempts+1"
            " WHERE notification_id = ANY($1::uuid[])",
            ids,
        )

    async def mark_skipped(self, skipped: Sequence[tuple[object, str]]) -> None:
        """(notification_id, why) pairs: never to be sent."""
        await self.db.execute(
            "UPDATE notifications n SET status='SKIPPED', last_error=s.why"
            " FROM unnest($1::uuid[], $2::text[]) AS s(id, why) WHERE n.notification_id = s.id",
            [i for i, _ in skipped],
            [why for _, why in skipped],
        )

    async def retry_later(self, notification_id: object, error: str, pause_seconds: float) -> None:
        """One more attempt counted, the next one due in `pause_seconds`."""
        await self.db.execute(
            "UPDATE notifications SET attempts=attempts+1, last_error=$2, next_attempt_at=now()+$3"
            " WHERE notification_id=$1",
            notification_id,
            error[:500],
            timedelta(seconds=pause_seconds),
        )

    async def seconds_to_next_due(self) -> float | None:
        """Seconds until the next pending notification is due (<= 0: now); None when none is pending."""
        due = await self.db.fetchval(
            "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM notifications WHERE status='PENDING'"
        )
        return None if due is None else float(due)

    async def record_sms(self, notification_id: object, to: str, body: str) -> None:
        """What the recording SMS provider "sends": one row per notification."""
        await self.db.execute(
            "INSERT INTO sms_messages(notification_id, to_number, body) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
            notification_id,
            to,
            body,
        )
