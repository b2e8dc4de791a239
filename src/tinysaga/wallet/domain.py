"""Wallet rules, pure: what a debit or a refund does given what the ledger already holds, and what
a batch of debits or a refund writes and answers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from tinysaga.contracts import ids
from tinysaga.contracts.records import DONE, FAILED, Record

MAX_DEPOSIT = Decimal("10000")
MAX_BATCH = 500  # debits in one call of /internal/payments/batch


class Status(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # a payment refused for insufficient funds (no money moved)
    REFUSED = "REFUSED"  # a debit after a refund or void of the same order
    REFUNDED = "REFUNDED"
    NOTHING_TO_REFUND = "NOTHING_TO_REFUND"  # a refund/void for an order never charged: blocks a late debit


PAYMENT, REFUND = "PAYMENT", "REFUND"  # the ledger rows of an order (one of each at most)
EXISTING = "EXISTING"  # the earlier answer stands
OTHER_WALLET = "this order was charged to another wallet"


@dataclass(frozen=True)
class LedgerEntry:
    transaction_id: str
    kind: str
    status: str
    amount: Decimal
    user_id: str | None = None  # the wallet the row is on


def debit_outcome(balance: Decimal, amount: Decimal, payment: LedgerEntry | None, refund: LedgerEntry | None) -> str:
    """COMPLETED (charge now), FAILED (insufficient funds), REFUSED (already refunded/voided) or
    'EXISTING' (the earlier answer stands: a retried request is not a second charge)."""
    if payment is not None:
        return EXISTING
    if refund is not None:
        return Status.REFUSED
    if balance < amount:
        return Status.FAILED
    return Status.COMPLETED


def refund_outcome(payment: LedgerEntry | None, refund: LedgerEntry | None) -> str:
    """REFUNDED (credit the charged amount), NOTHING_TO_REFUND, or 'EXISTING' (already done)."""
    if refund is not None:
        return EXISTING
    if payment is None or payment.status != Status.COMPLETED:
        return Status.NOTHING_TO_REFUND
    return Status.REFUNDED


# ---- what a call writes and answers ------------------------------------------------------------


@dataclass(frozen=True)
class Debit:
    """A debit asked for: charge `amount` to the user's wallet for the order, once."""

    order_id: str
    user_id: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class NewEntry:
    """A ledger row to write."""

    transaction_id: uuid.UUID
    user_id: str
    order_id: str
    kind: str
    status: str
    amount: Decimal
    currency: str
    description: str

    def entry(self) -> LedgerEntry:
        return LedgerEntry(str(self.transaction_id), self.kind, self.status, self.amount, self.user_id)


@dataclass(frozen=True)
class Answer:
    """The answer for one order: the ledger row that stands for it (no transaction for a REFUSED
    debit), or an error."""

    transaction_id: str | None = None
    status: str | None = None
    amount: Decimal | None = None
    error: str | None = None


@dataclass(frozen=True)
class Charges:
    """A batch of debits decided: the answers in the debits' order, the PAYMENT rows to write, and
    what to take from each wallet."""

    answers: list[Answer] = field(default_factory=list)
    new: list[NewEntry] = field(default_factory=list)
    taken: dict[str, Decimal] = field(default_factory=dict)


def payment_description(order_id: str, status: str) -> str:
    return f"order {order_id}" + ("" if status == Status.COMPLETED else ": insufficient funds")


def refund_description(order_id: str, reason: str) -> str:
    return f"refund of order {order_id}" + (f": {reason}" if reason else "")


def decide_charges(
    debits: Sequence[Debit],
    balances: Mapping[str, Decimal],
    ledger: Mapping[tuple[str, str], LedgerEntry],
    new_id: Callable[[], uuid.UUID] = ids.new_id,
) -> Charges:
    """Decide a batch of debits in order by `debit_outcome`, given each wallet's balance and the
    orders' ledger rows (by (order, kind)): each debit sees the balances and rows the ones before it
    left, so a repeat of an order within the batch gets the same answer, and an order already
    charged to another wallet gets an error (for that order only)."""
    balances = dict(balances)
    ledger = dict(ledger)
    out = Charges()
    for d in debits:
        payment, refund = ledger.get((d.order_id, PAYMENT)), ledger.get((d.order_id, REFUND))
        outcome = debit_outcome(balances[d.user_id], d.amount, payment, refund)
        if outcome == EXISTING and payment is not None:
            if payment.user_id != d.user_id:
                out.answers.append(Answer(error=OTHER_WALLET))
            else:
                out.answers.append(Answer(payment.transaction_id, payment.status, payment.amount))
            continue
        if outcome == Status.REFUSED:
            out.answers.append(Answer(None, str(Status.REFUSED), d.amount))
            continue
        if outcome == Status.COMPLETED:
            balances[d.user_id] -= d.amount
            out.taken[d.user_id] = out.taken.get(d.user_id, Decimal(0)) + d.amount
        row = NewEntry(
            new_id(),
            d.user_id,
            d.order_id,
            PAYMENT,
            str(outcome),
            d.amount,
            d.currency,
            payment_description(d.order_id, outcome),
        )
        ledger[(d.order_id, PAYMENT)] = row.entry()
        out.new.append(row)
        out.answers.append(Answer(str(row.transaction_id), row.status, d.amount))
    return out


@dataclass(frozen=True)
class RefundDecision:
    """A refund decided: the answer, the REFUND row to write and the amount to give back to the
    wallet (no row when the earlier answer stands or for an error)."""

    answer: Answer
    new: NewEntry | None = None
    credit: Decimal = Decimal(0)


def decide_refund(
    order_id: str,
    user_id: str,
    reason: str,
    currency: str,
    payment: LedgerEntry | None,
    refund: LedgerEntry | None,
    new_id: Callable[[], uuid.UUID] = ids.new_id,
) -> RefundDecision:
    """A refund (or void) of an order for the user's wallet by `refund_outcome`: the amount comes
    from the ledger, never from the caller; an order never charged gets a NOTHING_TO_REFUND row,
    which refuses a late debit; an order charged to another wallet is an error."""
    if payment is not None and payment.user_id != user_id:
        return RefundDecision(Answer(error=OTHER_WALLET))
    outcome = refund_outcome(payment, refund)
    if outcome == EXISTING and refund is not None:
        return RefundDecision(Answer(refund.transaction_id, refund.status, refund.amount))
    amount = payment.amount if outcome == Status.REFUNDED and payment is not None else Decimal("0")
    row = NewEntry(
        new_id(), user_id, order_id, REFUND, str(outcome), amount, currency, refund_description(order_id, reason)
    )
    return RefundDecision(Answer(str(row.transaction_id), row.status, amount), row, amount)


# ---- what Wallet did for an order (the saga map) --------------------------------------------------


def record_of(kind: str, status: str, amount: Decimal, currency: str, at: datetime, description: str) -> Record:
    """One ledger row of an order, as a record of the step it served: a PAYMENT row the charge, a
    REFUND row the refund (or the void that blocks a late debit)."""
    money = f"{amount:.2f} {currency}"
    if kind == PAYMENT:
        if status == Status.COMPLETED:
            return Record("charge", f"debited {money} from the wallet", at, DONE, description)
        return Record("charge", f"debit of {money} refused: the balance was short", at, FAILED, description)
    if status == Status.REFUNDED:
        return Record("refund", f"credited {money} back to the wallet", at, DONE, description)
    return Record("refund", "nothing had been taken: a late debit is refused from now on", at, DONE, description)
