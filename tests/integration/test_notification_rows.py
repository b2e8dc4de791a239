"""Notification's rows as its repository writes them, against the stack's PostgreSQL: a channel the
user has no address on is added as SKIPPED (ADR 63), and the deliverer's marks land on the rows
named. Everything runs in a transaction that is rolled back, so the running stack never sees it."""

from __future__ import annotations

import uuid

import asyncpg

from tests.support import rolled_back
from tinysaga.notification.domain import SUPERSEDED_BY, Contact, Wanted, skipped_when_added
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
        paid = Wanted(user, order, "PAYMENT_DONE", "paid", None, skipped)
        assert await repo.add_notifications([paid])
        rows = await rows_of(repo, order)
        assert (rows["SMS"]["status"], rows["SMS"]["last_error"]) == ("SKIPPED", "no phone number")
        assert (rows["EMAIL"]["status"], rows["EMAIL"]["last_error"]) == ("PENDING", None)
        assert not await repo.add_notifications([paid])  # once

        assert await repo.add_notifications([Wanted(user, order, "ORDER_PLACED", "placed", None, {})])  # both pending
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


def test_a_batch_s_rows_are_added_as_if_one_after_the_other(settings: Settings) -> None:
    """One statement for a batch's notifications (ADR 70): a type the order has already, in the table
    or twice in the batch, is added once; a placement after the order's cancel in the same batch is
    not added (`SUPERSEDED_BY`), while one before it is; only SKIPPED rows added is nothing for the
    deliverer."""
    user = f"u-{uuid.uuid4()}"
    early, late, known = (str(uuid.uuid4()) for _ in range(3))

    def want(order: str, kind: str, skipped: dict[str, str] | None = None) -> Wanted:
        return Wanted(user, order, kind, kind.lower(), SUPERSEDED_BY.get(kind), skipped or {})

    async def body(conn: asyncpg.Connection) -> None:
        repo = NotificationRepository(conn)
        assert await repo.add_notifications([want(known, "PAYMENT_DONE")])
        assert await repo.add_notifications(
            [
                want(known, "PAYMENT_DONE"),  # in the table already
                want(early, "ORDER_PLACED"),  # placed, then canceling: both told
                want(early, "ORDER_CANCELING"),
                want(late, "PAYMENT_DONE"),
                want(late, "ORDER_CANCELING"),
                want(late, "ORDER_PLACED"),  # after the cancel: not told
                want(late, "PAYMENT_DONE"),  # twice in the batch
            ]
        )
        kinds = {o: sorted({r["type"] for r in await repo.of_order(o)}) for o in (early, late, known)}
        assert kinds == {
            early: ["ORDER_CANCELING", "ORDER_PLACED"],
            late: ["ORDER_CANCELING", "PAYMENT_DONE"],
            known: ["PAYMENT_DONE"],
        }
        for o, told in kinds.items():  # both channels of each
            assert len(await repo.of_order(o)) == 2 * len(told)
        nowhere = {"EMAIL": "no email address", "SMS": "no phone number"}
        assert not await repo.add_notifications([want(str(uuid.uuid4()), "PAYMENT_DONE", nowhere)])
        assert not await repo.add_notifications([])

    rolled_back(settings, "tinysaga_notification", body)
