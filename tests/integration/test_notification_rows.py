"""Notification's rows as its repository writes them, against the stack's PostgreSQL: a channel the
user has no address on is added as SKIPPED (ADR 63), and the deliverer's marks land on the rows
named. Everything runs in a transaction that is rolled back, so the running stack never sees it."""

from __future__ import annotations

import uuid

import asyncpg

from tests.support import rolled_back
from tinysaga.notification.domain import Contact, skipped_when_added
from tinysaga.notification.repository import NotificationRepository
from tinysaga.platform.settings import Settings


async def rows_of(repo: NotificationRepository, order_id: str) -> dict[str, asyncpg.Record]:
    return {r["channel"]: r for r in await repo.of_order(order_id)}


def test_a_channel_without_an_address_is_added_skipped_and_the_marks_land(settings: Settings) -> None:
    user, order = f"u-{uuid.uuid4()}", str(uuid.uuid4())

    async def body(conn: asyncpg.Connection) -> None:
        repo = NotificationRepository(conn)
        assert await repo.contacts([user]) == {}
        await repo.remember_contact(user, "ann@example.com", None, "Ann")
        found = await repo.contacts([user, "nobody"])
        assert found == {user: Contact("ann@example.com", None)}

        skipped = skipped_when_added(found[user])
        assert await repo.add_notifications(user, order, "PAYMENT_DONE", "paid", skipped=skipped)
        rows = await rows_of(repo, order)
        assert (rows["SMS"]["status"], rows["SMS"]["last_error"]) == ("SKIPPED", "no phone number")
        assert (rows["EMAIL"]["status"], rows["EMAIL"]["last_error"]) == ("PENDING", None)
        assert not await repo.add_notifications(user, order, "PAYMENT_DONE", "paid", skipped=skipped)  # once

        assert await repo.add_notifications(user, order, "ORDER_PLACED", "placed")  # both pending
        placed = {r["channel"]: r for r in await repo.of_order(order) if r["type"] == "ORDER_PLACED"}
        assert {r["status"] for r in placed.values()} == {"PENDING"}

        await repo.mark_skipped([(rows["EMAIL"]["notification_id"], "not one email address")])
        await repo.mark_sent([placed["EMAIL"]["notification_id"], placed["SMS"]["notification_id"]])
        after = {(r["type"], r["channel"]): (r["status"], r["last_error"]) for r in await repo.of_order(order)}
        assert after == {
            ("PAYMENT_DONE", "EMAIL"): ("SKIPPED", "not one email address"),
            ("PAYMENT_DONE", "SMS"): ("SKIPPED", "no phone number"),
            ("ORDER_PLACED", "EMAIL"): ("SENT", None),
            ("ORDER_PLACED", "SMS"): ("SENT", None),
        }

    rolled_back(settings, "tinysaga_notification", body)
