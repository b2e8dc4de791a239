"""Wallet's batch of charges as its repository writes it, against the stack's PostgreSQL: the amounts
taken and the PAYMENT rows written by one statement, each order charged once, a repeat within the
batch or in a later call answered as the first time. Everything runs in a transaction that is
rolled back, so the running stack never sees it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg

from tests.support import rolled_back
from tinysaga.platform.settings import Settings
from tinysaga.wallet.api import charge_many
from tinysaga.wallet.domain import Debit, Status
from tinysaga.wallet.repository import WalletRepository


def test_a_batch_of_charges_takes_once_and_answers_a_repeat_the_same(settings: Settings) -> None:
    rich, poor = f"u-{uuid.uuid4()}", f"u-{uuid.uuid4()}"
    paid, short, again = (str(uuid.uuid4()) for _ in range(3))

    async def body(conn: asyncpg.Connection) -> None:
        repo = WalletRepository(conn)
        await repo.open(rich, "USD")
        await repo.credit(rich, Decimal("100.00"))
        batch = [
            Debit(paid, rich, Decimal("30.00"), "USD"),
            Debit(short, poor, Decimal("5.00"), "USD"),  # a wallet opened by the charge, empty
            Debit(again, rich, Decimal("20.00"), "USD"),
            Debit(paid, rich, Decimal("30.00"), "USD"),  # a repeat within the batch
        ]
        answers = await charge_many(repo, batch, "USD")
        assert [a.status for a in answers] == [
            Status.COMPLETED,
            Status.FAILED,
            Status.COMPLETED,
            Status.COMPLETED,
        ]
        assert answers[3] == answers[0]
        assert (await repo.balance(rich), await repo.balance(poor)) == (
            (Decimal("50.00"), "USD"),
            (Decimal("0"), "USD"),
        )
        rows = {
            r["order_id"]: r
            for r in await conn.fetch(
                "SELECT * FROM transactions WHERE order_id = ANY($1::text[])", [paid, short, again]
            )
        }
        assert {o: (r["payment_status"], r["amount"]) for o, r in rows.items()} == {
            paid: ("COMPLETED", Decimal("30.00")),
            short: ("FAILED", Decimal("5.00")),
            again: ("COMPLETED", Decimal("20.00")),
        }
        assert str(rows[paid]["transaction_id"]) == answers[0].transaction_id

        # the same orders asked again (Payment retrying): the same answers, nothing moves
        assert await charge_many(repo, batch[:3], "USD") == answers[:3]
        assert await repo.balance(rich) == (Decimal("50.00"), "USD")
        count = await conn.fetchval(
            "SELECT count(*) FROM transactions WHERE order_id = ANY($1::text[])", [paid, short, again]
        )
        assert count == 3

    rolled_back(settings, "tinysaga_wallet", body)
