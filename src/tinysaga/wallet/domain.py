"""Wallet rules, pure: what a debit or a refund does given what the ledger already holds."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

MAX_DEPOSIT = Decimal("10000")
MAX_BATCH = 500  # debits in one call of /internal/payments/batch


class Status(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # a payment refused for insufficient funds (no money moved)
    REFUSED = "REFUSED"  # a debit after a refund or void of the same order
    REFUNDED = "REFUNDED"
    NOTHING_TO_REFUND = "NOTHING_TO_REFUND"  # a refund/void for an order never charged: blocks a late debit


@dataclass(frozen=True)
class LedgerEntry:
    transaction_id: str
    kind: str
    status: str
    amount: Decimal


def debit_outcome(balance: Decimal, amount: Decimal, payment: LedgerEntry | None, refund: LedgerEntry | None) -> str:
    """COMPLETED (charge now), FAILED (insufficient funds), REFUSED (already refunded/voided) or
    'EXISTING' (the earlier answer stands: a retried request is not a second charge)."""
    if payment is not None:
        return "EXISTING"
    if refund is not None:
        return Status.REFUSED
    if balance < amount:
        return Status.FAILED
    return Status.COMPLETED


def refund_outcome(payment: LedgerEntry | None, refund: LedgerEntry | None) -> str:
    """REFUNDED (credit the charged amount), NOTHING_TO_REFUND, or 'EXISTING' (already done)."""
    if refund is not None:
        return "EXISTING"
    if payment is None or payment.status != Status.COMPLETED:
        return Status.NOTHING_TO_REFUND
    return Status.REFUNDED
