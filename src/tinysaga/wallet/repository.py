"""All of Wallet's SQL: the wallets (balances) and the transactions (the ledger). Built on a pool (one
statement, or a transaction of its own: `transaction`) or on a connection in a transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg

from tinysaga.wallet.domain import PAYMENT, LedgerEntry, NewEntry

_LOCK_MANY = "SELECT user_id, balance FROM wallets WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE"


def entry_of(row: Mapping[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        str(row["transaction_id"]), row["transaction_type"], row["payment_status"], row["amount"], row["user_id"]
    )


class WalletRepository:
    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self.db = db

    @classmethod
    @asynccontextmanager
    async def transaction(cls, pool: asyncpg.Pool) -> AsyncIterator[WalletRepository]:
        """A repository on a connection in a transaction of its own, committed when the block ends."""
        async with pool.acquire() as conn, conn.transaction():
            yield cls(conn)

    @classmethod
    @asynccontextmanager
    async def connection(cls, pool: asyncpg.Pool) -> AsyncIterator[WalletRepository]:
        """A repository on one pool connection, without a transaction (each statement its own)."""
        async with pool.acquire() as conn:
            yield cls(conn)

    # ---- wallets -------------------------------------------------------------------------------

    async def open(self, user_id: str, currency: str) -> None:
        """Open the user's wallet, empty; nothing if it is open."""
        await self.db.execute(
            "INSERT INTO wallets(user_id, balance, currency) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
            user_id,
            currency,
        )

    async def balance(self, user_id: str) -> tuple[Decimal, str] | None:
        """The wallet's balance and currency; None when it is not open."""
        row = await self.db.fetchrow("SELECT balance, currency FROM wallets WHERE user_id=$1", user_id)
        return None if row is None else (row["balance"], row["currency"])

    async def lock(self, user_id: str) -> Decimal | None:
        """The balance, with the wallet row locked until the transaction ends; None when not open."""
        return await self.db.fetchval("SELECT balance FROM wallets WHERE user_id=$1 FOR UPDATE", user_id)

    async def lock_or_open(self, user_id: str, currency: str) -> Decimal:
        """`lock`; a wallet whose USER_REGISTERED has not arrived yet is opened first (the insert only
        when the row is missing: one statement less on every call)."""
        balance = await self.lock(user_id)
        if balance is None:
            await self.open(user_id, currency)
            balance = await self.lock(user_id)
        return balance

    async def lock_or_open_many(self, user_ids: Sequence[str], currency: str) -> dict[str, Decimal]:
        """The balances, the wallets locked in one statement in user order (so two batches cannot
        deadlock); the missing ones opened (one statement) and locked."""
        users = sorted(set(user_ids))
        balances = {r["user_id"]: r["balance"] for r in await self.db.fetch(_LOCK_MANY, users)}
        if len(balances) < len(users):  # a wallet whose USER_REGISTERED has not arrived yet
            missing = [u for u in users if u not in balances]
            await self.db.execute(
                "INSERT INTO wallets(user_id, balance, currency) SELECT u, 0, $2 FROM unnest($1::text[]) u"
                " ON CONFLICT DO NOTHING",
                missing,
                currency,
            )
            balances.update({r["user_id"]: r["balance"] for r in await self.db.fetch(_LOCK_MANY, missing)})
        return balances

    async def credit(self, user_id: str, amount: Decimal) -> Decimal:
        """Add to the balance; the new balance."""
        return await self.db.fetchval(
            "UPDATE wallets SET balance = balance + $2, updated_at = now() WHERE user_id=$1 RETURNING balance",
            user_id,
            amount,
        )

    # ---- the ledger ----------------------------------------------------------------------------

    async def ledger_of(self, order_ids: Sequence[str]) -> dict[tuple[str, str], LedgerEntry]:
        """The orders' PAYMENT and REFUND rows, by (order, kind), in one statement."""
        rows = await self.db.fetch("SELECT * FROM transactions WHERE order_id = ANY($1::text[])", list(set(order_ids)))
        return {(r["order_id"], r["transaction_type"]): entry_of(r) for r in rows}

    async def order_entries(self, order_id: str) -> dict[str, LedgerEntry]:
        """One order's rows, by kind."""
        rows = await self.db.fetch("SELECT * FROM transactions WHERE order_id=$1", order_id)
        return {r["transaction_type"]: entry_of(r) for r in rows}

    async def of_order(self, order_id: str) -> list[asyncpg.Record]:
        """One order's ledger rows as stored (its PAYMENT and REFUND, at most one of each), oldest first."""
        return await self.db.fetch("SELECT * FROM transactions WHERE order_id=$1 ORDER BY created_at", order_id)

    async def charge(self, taken: Mapping[str, Decimal], rows: Sequence[NewEntry]) -> None:
        """A batch of charges as decided, in one statement: the amounts taken from the wallets
        (user -> amount) and the PAYMENT rows (completed or refused)."""
        if not rows:
            return
        assert all(r.kind == PAYMENT for r in rows)
        await self.db.execute(
            "WITH t AS (UPDATE wallets w SET balance = w.balance - c.amount, updated_at = now()"
            " FROM unnest($1::text[], $2::numeric[]) AS c(user_id, amount) WHERE w.user_id = c.user_id)"
            " INSERT INTO transactions(transaction_id, user_id, order_id, transaction_type, payment_status, amount,"
            " currency, description) SELECT t, u, o, 'PAYMENT', s, a, c, d FROM unnest($3::uuid[], $4::text[],"
            " $5::text[], $6::text[], $7::numeric[], $8::text[], $9::text[]) AS x(t, u, o, s, a, c, d)",
            list(taken),
            list(taken.values()),
            [r.transaction_id for r in rows],
            [r.user_id for r in rows],
            [r.order_id for r in rows],
            [r.status for r in rows],
            [r.amount for r in rows],
            [r.currency for r in rows],
            [r.description for r in rows],
        )

    async def add_refund(self, row: NewEntry) -> None:
        await self.db.execute(
            "INSERT INTO transactions(transaction_id, user_id, order_id, transaction_type, payment_status, amount,"
            " currency, description) VALUES ($1,$2,$3,'REFUND',$4,$5,$6,$7)",
            row.transaction_id,
            row.user_id,
            row.order_id,
            row.status,
            row.amount,
            row.currency,
            row.description,
        )

    async def deposit_with_key(self, user_id: str, key: str) -> tuple[str, str | None] | None:
        """The deposit made earlier with this Idempotency-Key: (transaction id, request hash)."""
        row = await self.db.fetchrow(
            "SELECT transaction_id, request_hash FROM transactions WHERE user_id=$1 AND idempotency_key=$2",
            user_id,
            key,
        )
        return None if row is None else (str(row["transaction_id"]), row["request_hash"])

    async def add_deposit(
        self,
        transaction_id: Any,
        user_id: str,
        amount: Decimal,
        currency: str,
        description: str,
        key: str | None,
        digest: str | None,
    ) -> None:
        await self.db.execute(
            "INSERT INTO transactions(transaction_id, user_id, transaction_type, payment_status, amount, currency,"
            " description, idempotency_key, request_hash) VALUES ($1,$2,'DEPOSIT','COMPLETED',$3,$4,$5,$6,$7)",
            transaction_id,
            user_id,
            amount,
            currency,
            description,
            key,
            digest,
        )

    async def recent(self, user_id: str, limit: int) -> list[asyncpg.Record]:
        """The user's ledger, newest first."""
        return await self.db.fetch(
            "SELECT * FROM transactions WHERE user_id=$1 ORDER BY created_at DESC LIMIT $2", user_id, limit
        )
