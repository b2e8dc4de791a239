"""Wallet routes: the user's balance, deposits and ledger (public, through the gateway), and the
debit and refund that Payment calls (internal, never routed by the gateway)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tinysaga.contracts.events import USER_REGISTERED, Event
from tinysaga.platform.consumer import Handler, HandlerContext
from tinysaga.platform.idempotency import check_key, request_hash, reused_with_other_body
from tinysaga.platform.money import Amount, as_number
from tinysaga.platform.service import Runtime
from tinysaga.platform.service import runtime as _rt
from tinysaga.platform.web import JSON, Identity, Problem, current_user
from tinysaga.wallet.domain import MAX_BATCH, MAX_DEPOSIT, LedgerEntry, Status, debit_outcome, refund_outcome

router = APIRouter()


class DepositIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    amount: Amount = Field(le=MAX_DEPOSIT)


class DebitIn(BaseModel):
    orderId: str = Field(min_length=1, max_length=64)
    userId: str = Field(min_length=1, max_length=64)
    amount: Amount
    currency: str = Field(min_length=3, max_length=3)


class RefundIn(BaseModel):
    orderId: str = Field(min_length=1, max_length=64)
    userId: str = Field(min_length=1, max_length=64)
    reason: str = Field("", max_length=200)


async def ensure_wallet(conn: asyncpg.Connection, user_id: str, currency: str) -> None:
    await conn.execute(
        "INSERT INTO wallets(user_id, balance, currency) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
        user_id,
        currency,
    )


async def lock_wallet(conn: asyncpg.Connection, user_id: str, currency: str) -> Decimal:
    """The balance, with the wallet row locked for the transaction; a wallet whose USER_REGISTERED
    has not arrived yet is opened first (the insert only when the row is missing: one statement
    less on every charge)."""
    balance = await conn.fetchval("SELECT balance FROM wallets WHERE user_id=$1 FOR UPDATE", user_id)
    if balance is None:
        await ensure_wallet(conn, user_id, currency)
        balance = await conn.fetchval("SELECT balance FROM wallets WHERE user_id=$1 FOR UPDATE", user_id)
    return balance


def _tx_json(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "transactionId": str(r["transaction_id"]),
        "orderId": r["order_id"],
        "transactionType": r["transaction_type"],
        "paymentStatus": r["payment_status"],
        "amount": as_number(r["amount"]),
        "currency": r["currency"],
        "timestamp": r["created_at"].isoformat(),
        "description": r["description"],
    }


@router.get("/api/wallet")
async def get_wallet(request: Request, user: Identity = Depends(current_user)) -> dict[str, Any]:
    rt = _rt(request)
    async with rt.pool.acquire() as conn:
        await ensure_wallet(conn, user.user_id, rt.settings.currency)
        row = await conn.fetchrow("SELECT balance, currency FROM wallets WHERE user_id=$1", user.user_id)
    return {"userId": user.user_id, "balance": as_number(row["balance"]), "currency": row["currency"]}


@router.post("/api/wallet/deposits", status_code=201)
async def deposit(
    body: DepositIn,
    request: Request,
    user: Identity = Depends(current_user),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSON:
    rt = _rt(request)
    key = check_key(idempotency_key)
    digest = request_hash({"amount": str(body.amount)}) if key else None
    async with rt.pool.acquire() as conn, conn.transaction():
        await ensure_wallet(conn, user.user_id, rt.settings.currency)
        balance = await conn.fetchval("SELECT balance FROM wallets WHERE user_id=$1 FOR UPDATE", user.user_id)
        if key:
            prior = await conn.fetchrow(
                "SELECT transaction_id, request_hash FROM transactions WHERE user_id=$1 AND idempotency_key=$2",
                user.user_id,
                key,
            )
            if prior is not None:
                if prior["request_hash"] != digest:
                    raise reused_with_other_body()
                return JSON({"balance": balance, "transactionId": str(prior["transaction_id"])}, status_code=201)
        tx_id = uuid.uuid4()
        balance = await conn.fetchval(
            "UPDATE wallets SET balance = balance + $2, updated_at = now() WHERE user_id=$1 RETURNING balance",
            user.user_id,
            body.amount,
        )
        await conn.execute(
            "INSERT INTO transactions(transaction_id, user_id, transaction_type, payment_status, amount, currency,"
            " description, idempotency_key, request_hash) VALUES ($1,$2,'DEPOSIT','COMPLETED',$3,$4,$5,$6,$7)",
            tx_id,
            user.user_id,
            body.amount,
            rt.settings.currency,
            "wallet top-up",
            key,
            digest,
        )
    return JSON({"balance": balance, "transactionId": str(tx_id)}, status_code=201)


@router.get("/api/wallet/transactions")
async def transactions(
    request: Request,
    user: Identity = Depends(current_user),
    limit: int = Query(100, ge=1, le=500),
) -> list[dict[str, Any]]:
    rows = await _rt(request).pool.fetch(
        "SELECT * FROM transactions WHERE user_id=$1 ORDER BY created_at DESC LIMIT $2", user.user_id, limit
    )
    return [_tx_json(r) for r in rows]


# ---- internal: called by Payment only -------------------------------------------------------


def _entry(r: asyncpg.Record | None) -> LedgerEntry | None:
    if r is None:
        return None
    return LedgerEntry(str(r["transaction_id"]), r["transaction_type"], r["payment_status"], r["amount"])


async def _order_rows(conn: asyncpg.Connection, order_id: str) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM transactions WHERE order_id=$1", order_id)
    return {r["transaction_type"]: r for r in rows}


class DebitsIn(BaseModel):
    debits: list[DebitIn] = Field(min_length=1, max_length=MAX_BATCH)


async def charge_many(conn: asyncpg.Connection, debits: list[DebitIn], currency: str) -> list[dict[str, Any]]:
    """Charge wallets for orders, each order once, in the caller's transaction: the wallets locked
    in one statement (in user order, so two batches cannot deadlock), the orders' ledger read in one,
    the outcomes decided in order by the pure rules, and written in two. The answer for an order is
    always the same; an order already charged to another wallet gets an `error` instead."""
    users = sorted({d.userId for d in debits})
    lock = "SELECT user_id, balance FROM wallets WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE"
    balances = {r["user_id"]: r["balance"] for r in await conn.fetch(lock, users)}
    if len(balances) < len(users):  # a wallet whose USER_REGISTERED has not arrived yet
        missing = [u for u in users if u not in balances]
        await conn.execute(
            "INSERT INTO wallets(user_id, balance, currency) SELECT u, 0, $2 FROM unnest($1::text[]) u"
            " ON CONFLICT DO NOTHING",
            missing,
            currency,
        )
        balances.update({r["user_id"]: r["balance"] for r in await conn.fetch(lock, missing)})
    ledger: dict[tuple[str, str], dict[str, Any]] = {
        (r["order_id"], r["transaction_type"]): dict(r)
        for r in await conn.fetch(
            "SELECT * FROM transactions WHERE order_id = ANY($1::text[])", list({d.orderId for d in debits})
        )
    }
    results: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    for d in debits:
        payment, refund = ledger.get((d.orderId, "PAYMENT")), ledger.get((d.orderId, "REFUND"))
        outcome = debit_outcome(balances[d.userId], d.amount, _entry(payment), _entry(refund))
        if outcome == "EXISTING" and payment is not None:  # (EXISTING means there is one)
            if payment["user_id"] != d.userId:
                results.append({"error": "this order was charged to another wallet"})
            else:
                results.append(
                    {
                        "transactionId": str(payment["transaction_id"]),
                        "status": payment["payment_status"],
                        "amount": as_number(payment["amount"]),
                    }
                )
            continue
        if outcome == Status.REFUSED:
            results.append({"transactionId": None, "status": Status.REFUSED, "amount": as_number(d.amount)})
            continue
        if outcome == Status.COMPLETED:
            balances[d.userId] -= d.amount
        row = {
            "transaction_id": uuid.uuid4(),
            "user_id": d.userId,
            "order_id": d.orderId,
            "transaction_type": "PAYMENT",
            "payment_status": str(outcome),
            "amount": d.amount,
            "currency": d.currency,
            "description": f"order {d.orderId}" + ("" if outcome == Status.COMPLETED else ": insufficient funds"),
        }
        ledger[(d.orderId, "PAYMENT")] = row
        new.append(row)
        results.append(
            {"transactionId": str(row["transaction_id"]), "status": str(outcome), "amount": as_number(d.amount)}
        )
    if new:
        charged: dict[str, Decimal] = {}
        for r in new:
            if r["payment_status"] == Status.COMPLETED:
                charged[r["user_id"]] = charged.get(r["user_id"], Decimal(0)) + r["amount"]
        if charged:
            await conn.execute(
                "UPDATE wallets w SET balance = w.balance - c.amount, updated_at = now()"
                " FROM unnest($1::text[], $2::numeric[]) AS c(user_id, amount) WHERE w.user_id = c.user_id",
                list(charged),
                list(charged.values()),
            )
        cols = ("transaction_id", "user_id", "order_id", "payment_status", "amount", "currency", "description")
        await conn.execute(
            "INSERT INTO transactions(transaction_id, user_id, order_id, transaction_type, payment_status, amount,"
            " currency, description) SELECT t, u, o, 'PAYMENT', s, a, c, d FROM unnest($1::uuid[], $2::text[],"
            " $3::text[], $4::text[], $5::numeric[], $6::text[], $7::text[]) AS x(t, u, o, s, a, c, d)",
            *([r[c] for r in new] for c in cols),
        )
    return results


@router.post("/internal/payments")
async def debit(body: DebitIn, request: Request) -> dict[str, Any]:
    """Charge a wallet for an order, once. The answer for an order is always the same."""
    rt = _rt(request)
    async with rt.pool.acquire() as conn, conn.transaction():
        (result,) = await charge_many(conn, [body], rt.settings.currency)
    if "error" in result:
        raise Problem(409, "Conflict", result["error"])
    return result


@router.post("/internal/payments/batch")
async def debit_many(body: DebitsIn, request: Request) -> dict[str, Any]:
    """Charge many orders in one transaction (what Payment sends for the orders one poll brought);
    the answers in the same order, each as `/internal/payments` gives it, or `{error}`."""
    rt = _rt(request)
    async with rt.pool.acquire() as conn, conn.transaction():
        results = await charge_many(conn, body.debits, rt.settings.currency)
    return {"results": results}


@router.post("/internal/refunds")
async def refund(body: RefundIn, request: Request) -> dict[str, Any]:
    """Give back what an order was charged, once. The amount comes from the ledger, never from the
    caller; an order never charged gets a NOTHING_TO_REFUND row, which refuses a late debit."""
    rt = _rt(request)
    async with rt.pool.acquire() as conn, conn.transaction():
        await lock_wallet(conn, body.userId, rt.settings.currency)
        rows = await _order_rows(conn, body.orderId)
        payment = rows.get("PAYMENT")
        if payment is not None and payment["user_id"] != body.userId:
            raise Problem(409, "Conflict", "this order was charged to another wallet")
        outcome = refund_outcome(_entry(payment), _entry(rows.get("REFUND")))
        if outcome == "EXISTING":
            r = rows["REFUND"]
            return {
                "transactionId": str(r["transaction_id"]),
                "status": r["payment_status"],
                "amount": as_number(r["amount"]),
            }
        amount = payment["amount"] if outcome == Status.REFUNDED else Decimal("0")
        tx_id = uuid.uuid4()
        if amount:
            await conn.execute(
                "UPDATE wallets SET balance = balance + $2, updated_at = now() WHERE user_id=$1", body.userId, amount
            )
        await conn.execute(
            "INSERT INTO transactions(transaction_id, user_id, order_id, transaction_type, payment_status, amount,"
            " currency, description) VALUES ($1,$2,$3,'REFUND',$4,$5,$6,$7)",
            tx_id,
            body.userId,
            body.orderId,
            str(outcome),
            amount,
            rt.settings.currency,
            f"refund of order {body.orderId}" + (f": {body.reason}" if body.reason else ""),
        )
    return {"transactionId": str(tx_id), "status": str(outcome), "amount": as_number(amount)}


@router.get("/internal/wallets/{user_id}")
async def internal_balance(user_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    async with rt.pool.acquire() as conn:
        await ensure_wallet(conn, user_id, rt.settings.currency)
        row = await conn.fetchrow("SELECT balance, currency FROM wallets WHERE user_id=$1", user_id)
    return {"userId": user_id, "balance": as_number(row["balance"]), "currency": row["currency"]}


# ---- consumer ----------------------------------------------------------------------------------


def handlers(rt: Runtime) -> dict[str, Handler]:
    async def on_user_registered(event: Event, ctx: HandlerContext) -> None:
        if not event.userId:
            raise ValueError("USER_REGISTERED without userId")
        async with ctx.transaction() as conn:
            await ensure_wallet(conn, event.userId, rt.settings.currency)

    return {USER_REGISTERED: on_user_registered}
