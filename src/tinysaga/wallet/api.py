"""Wallet routes: the user's balance, deposits and ledger (public, through the gateway), the
batched debit and the refund that Payment calls, and an order's ledger rows for the saga map
(internal, never routed by the gateway). The SQL is
in `repository`, the decisions in `domain`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tinysaga.contracts import records, routes
from tinysaga.contracts.ids import new_id
from tinysaga.platform.idempotency import check_key, request_hash, reused_with_other_body
from tinysaga.platform.money import Amount, as_number
from tinysaga.platform.service import runtime
from tinysaga.platform.web import JSON, Identity, Problem, current_user, uuid_in_path
from tinysaga.wallet.domain import (
    MAX_BATCH,
    MAX_DEPOSIT,
    PAYMENT,
    REFUND,
    Answer,
    Debit,
    decide_charges,
    decide_refund,
    record_of,
)
from tinysaga.wallet.repository import WalletRepository

if TYPE_CHECKING:
    from tinysaga.wallet.bootstrap import WalletDeps

router = APIRouter()


def deps(request: Request) -> WalletDeps:
    """The service's dependencies, from inside a route."""
    return runtime(request).deps


class DepositIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    amount: Amount = Field(le=MAX_DEPOSIT)


class DebitIn(BaseModel):
    orderId: str = Field(min_length=1, max_length=64)
    userId: str = Field(min_length=1, max_length=64)
    amount: Amount
    currency: str = Field(min_length=3, max_length=3)


class DebitsIn(BaseModel):
    debits: list[DebitIn] = Field(min_length=1, max_length=MAX_BATCH)


class RefundIn(BaseModel):
    orderId: str = Field(min_length=1, max_length=64)
    userId: str = Field(min_length=1, max_length=64)
    reason: str = Field("", max_length=200)


def _tx_json(r: Any) -> dict[str, Any]:
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


def _answer_json(a: Answer) -> dict[str, Any]:
    if a.error is not None:
        return {"error": a.error}
    return {"transactionId": a.transaction_id, "status": a.status, "amount": as_number(a.amount)}


async def _balance_json(repo: WalletRepository, user_id: str, currency: str) -> dict[str, Any]:
    await repo.open(user_id, currency)
    balance = await repo.balance(user_id)
    assert balance is not None
    return {"userId": user_id, "balance": as_number(balance[0]), "currency": balance[1]}


@router.get("/api/wallet")
async def get_wallet(request: Request, user: Identity = Depends(current_user)) -> dict[str, Any]:
    d = deps(request)
    async with WalletRepository.connection(d.pool) as repo:
        return await _balance_json(repo, user.user_id, d.currency)


@router.post("/api/wallet/deposits", status_code=201)
async def deposit(
    body: DepositIn,
    request: Request,
    user: Identity = Depends(current_user),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSON:
    d = deps(request)
    key = check_key(idempotency_key)
    digest = request_hash({"amount": str(body.amount)}) if key else None
    async with WalletRepository.transaction(d.pool) as repo:
        await repo.open(user.user_id, d.currency)
        balance = await repo.lock(user.user_id)
        if key:
            prior = await repo.deposit_with_key(user.user_id, key)
            if prior is not None:
                if prior[1] != digest:
                    raise reused_with_other_body()
                return JSON({"balance": balance, "transactionId": prior[0]}, status_code=201)
        tx_id = new_id()
        balance = await repo.credit(user.user_id, body.amount)
        await repo.add_deposit(tx_id, user.user_id, body.amount, d.currency, "wallet top-up", key, digest)
    return JSON({"balance": balance, "transactionId": str(tx_id)}, status_code=201)


@router.get("/api/wallet/transactions")
async def transactions(
    request: Request,
    user: Identity = Depends(current_user),
    limit: int = Query(100, ge=1, le=500),
) -> list[dict[str, Any]]:
    rows = await WalletRepository(deps(request).pool).recent(user.user_id, limit)
    return [_tx_json(r) for r in rows]


# ---- internal: called by Payment only -------------------------------------------------------


async def charge_many(repo: WalletRepository, debits: list[Debit], currency: str) -> list[Answer]:
    """Charge wallets for orders, each order once, in the repository's transaction: the wallets
    locked in one statement, the orders' ledger read in one (after the lock, so that it sees what a
    concurrent charge of the same wallet committed), the outcomes decided in order by the pure rules,
    and written in one. The answer for an order is always the same; an order already
    charged to another wallet gets an error instead."""
    balances = await repo.lock_or_open_many([d.user_id for d in debits], currency)
    ledger = await repo.ledger_of([d.order_id for d in debits])
    decided = decide_charges(debits, balances, ledger)
    await repo.charge(decided.taken, decided.new)
    return decided.answers


@router.post(routes.WALLET_PAYMENTS_BATCH)
async def debit_many(body: DebitsIn, request: Request) -> dict[str, Any]:
    """Charge many orders in one transaction (what Payment sends for the orders one poll brought);
    the answers in the same order, each `{transactionId, status, amount}`, or `{error}`."""
    d = deps(request)
    debits = [Debit(x.orderId, x.userId, x.amount, x.currency) for x in body.debits]
    async with WalletRepository.transaction(d.pool) as repo:
        answers = await charge_many(repo, debits, d.currency)
    return {"results": [_answer_json(a) for a in answers]}


@router.post(routes.WALLET_REFUNDS)
async def refund(body: RefundIn, request: Request) -> dict[str, Any]:
    """Give back what an order was charged, once. The amount comes from the ledger, never from the
    caller; an order never charged gets a NOTHING_TO_REFUND row, which refuses a late debit."""
    d = deps(request)
    async with WalletRepository.transaction(d.pool) as repo:
        await repo.lock_or_open(body.userId, d.currency)
        rows = await repo.order_entries(body.orderId)
        decided = decide_refund(body.orderId, body.userId, body.reason, d.currency, rows.get(PAYMENT), rows.get(REFUND))
        if decided.answer.error is not None:
            raise Problem(409, "Conflict", decided.answer.error)
        if decided.credit:
            await repo.credit(body.userId, decided.credit)
        if decided.new is not None:
            await repo.add_refund(decided.new)
    return _answer_json(decided.answer)


@router.get("/internal/wallets/{user_id}")  # routes.WALLET_BALANCE
async def internal_balance(user_id: str, request: Request) -> dict[str, Any]:
    d = deps(request)
    async with WalletRepository.connection(d.pool) as repo:
        return await _balance_json(repo, user_id, d.currency)


@router.get(routes.ORDER_RECORDS)
async def order_records(orderId: str, request: Request) -> dict[str, Any]:
    """What Wallet did for the order: its ledger rows (the debit, the refund or void) as records of
    the saga's steps. 422 for an id that is not a UUID."""
    order_id = str(uuid_in_path(orderId, "orderId"))
    rows = await WalletRepository(deps(request).pool).of_order(order_id)
    found = [
        record_of(
            r["transaction_type"], r["payment_status"], r["amount"], r["currency"], r["created_at"], r["description"]
        )
        for r in rows
    ]
    return records.answer("wallet", order_id, found)
