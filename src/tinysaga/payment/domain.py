"""Payment rules, pure. A payment row moves only along a row of `TRANSITIONS`: (its status, or None
before it exists; what happened) -> its new status and the event that says so. The wallet's answers
are read into what happened by the functions below; anything the table has no row for changes
nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tinysaga.contracts import events as ev
from tinysaga.contracts.records import DONE, FAILED, PENDING, Record


class Status(StrEnum):
    """The status of a payments row (see the migration for each one's meaning)."""

    CHARGED = "CHARGED"
    DECLINED = "DECLINED"
    VOID_PENDING = "VOID_PENDING"
    VOIDED = "VOIDED"
    REFUND_PENDING = "REFUND_PENDING"
    REFUNDED = "REFUNDED"
    REFUND_FAILED = "REFUND_FAILED"


class Happened(StrEnum):
    """What moves a payment: the wallet's answer to a charge, a refund or a void, or a refund asked
    for by the saga."""

    CHARGE_COMPLETED = "CHARGE_COMPLETED"  # the wallet was debited
    CHARGE_FAILED = "CHARGE_FAILED"  # insufficient funds: nothing moved
    CHARGE_REFUSED = "CHARGE_REFUSED"  # the order was voided first (timed out or canceled): nothing moved
    CHARGE_UNANSWERED = "CHARGE_UNANSWERED"  # no answer (or an error): a debit may have landed
    REFUND_WANTED = "REFUND_WANTED"  # out of stock, the saga timed out, or the order was canceled
    REFUND_RETRY_WANTED = "REFUND_RETRY_WANTED"  # an operator retries a refund that failed (issue 17)
    REFUND_DONE = "REFUND_DONE"  # the wallet gave the money back (or had nothing to give back)
    REFUND_UNANSWERED = "REFUND_UNANSWERED"  # the wallet could not or would not refund
    VOID_REFUNDED = "VOID_REFUNDED"  # a void: the debit had landed, and was given back
    VOID_NOTHING = "VOID_NOTHING"  # a void: nothing had been taken (a late debit is now refused)
    VOID_UNANSWERED = "VOID_UNANSWERED"  # a void the wallet did not answer
    # the same three answers to the void of a canceled order, which Order waits for
    CANCEL_VOID_REFUNDED = "CANCEL_VOID_REFUNDED"
    CANCEL_VOID_NOTHING = "CANCEL_VOID_NOTHING"
    CANCEL_VOID_UNANSWERED = "CANCEL_VOID_UNANSWERED"


@dataclass(frozen=True)
class Transition:
    to: Status
    event: str | None = None  # the event published with the change (None: none)
    fail_reason: str | None = None  # its failReason on the wire, when fixed


S, H = Status, Happened
# (from, what happened) -> the change. None: no payment row yet.
TRANSITIONS: dict[tuple[Status | None, Happened], Transition] = {
    # the charge (ORDER_INITIATED): the row is written with its outcome event
    (None, H.CHARGE_COMPLETED): Transition(S.CHARGED, ev.PAYMENT_DONE),
    (None, H.CHARGE_FAILED): Transition(S.DECLINED, ev.PAYMENT_FAIL, ev.INSUFFICIENT_FUND),
    (None, H.CHARGE_REFUSED): Transition(S.VOIDED, ev.PAYMENT_FAIL, ev.SERVER_ERROR),
    (None, H.CHARGE_UNANSWERED): Transition(S.VOID_PENDING, ev.PAYMENT_FAIL, ev.SERVER_ERROR),
    # a timed-out order never charged here: voided at the wallet so a late debit is refused
    (None, H.VOID_REFUNDED): Transition(S.VOIDED),
    (None, H.VOID_NOTHING): Transition(S.VOIDED),
    (None, H.VOID_UNANSWERED): Transition(S.VOID_PENDING),  # the voider retries it
    # a canceled order never charged here: voided the same way, and the cancel answered (ADR 13)
    (None, H.CANCEL_VOID_REFUNDED): Transition(S.VOIDED, ev.REFUND_DONE),
    (None, H.CANCEL_VOID_NOTHING): Transition(S.VOIDED, ev.PAYMENT_VOIDED),
    (None, H.CANCEL_VOID_UNANSWERED): Transition(S.VOID_PENDING),  # the voider retries it, and answers
    # the refund: asked for (REFUND_INITIATED), then answered by the wallet
    (S.CHARGED, H.REFUND_WANTED): Transition(S.REFUND_PENDING, ev.REFUND_INITIATED),
    (S.REFUND_PENDING, H.REFUND_DONE): Transition(S.REFUNDED, ev.REFUND_DONE),
    (S.REFUND_PENDING, H.REFUND_UNANSWERED): Transition(S.REFUND_FAILED, ev.REFUND_FAILED),
    # an operator's retry: pending again (REFUND_INITIATED was said the first time), then the
    # wallet's answer as above
    (S.REFUND_FAILED, H.REFUND_RETRY_WANTED): Transition(S.REFUND_PENDING),
    # the voider: a charge whose outcome was unknown
    (S.VOID_PENDING, H.VOID_REFUNDED): Transition(S.VOIDED, ev.REFUND_DONE),
    (S.VOID_PENDING, H.VOID_NOTHING): Transition(S.VOIDED),
    # ... and a canceled order's void the wallet did not answer at first
    (S.VOID_PENDING, H.CANCEL_VOID_REFUNDED): Transition(S.VOIDED, ev.REFUND_DONE),
    (S.VOID_PENDING, H.CANCEL_VOID_NOTHING): Transition(S.VOIDED, ev.PAYMENT_VOIDED),
}

FINAL = frozenset({S.DECLINED, S.VOIDED, S.REFUNDED})  # no way out
# REFUND_FAILED waits for an operator: `REFUND_RETRY_REQUESTED` makes it pending again.

PAYMENT_TYPES = ("WALLET",)
DETAIL_MAX = 500  # characters of the wallet's answer kept in the row's detail
FAIL_REASON_MAX = 200  # ... and in a REFUND_FAILED's failReason
EARLY_VOID_DETAIL = "voided before any charge: the saga timed out"
CANCEL_VOID_DETAIL = "voided before any charge: the order was canceled"  # the voider answers the cancel
VOID_REASON = "void after a payment error"
CANCEL_REASON = "order canceled"
RETRY_REASON = "refund retried by an operator"
# The compensations Order asks for: Payment acts on one only once Order confirms it asked.
REQUESTED_BY_ORDER = frozenset({ev.ORDER_TIMED_OUT, ev.ORDER_CANCEL_REQUESTED, ev.REFUND_RETRY_REQUESTED})


def apply(status: Status | None, happened: Happened) -> Transition | None:
    """The change `happened` makes to a payment in `status`, or None when it makes none."""
    return TRANSITIONS.get((status, happened))


# ---- the wallet's answers ----------------------------------------------------------------------


def charge_answer(answer: Mapping[str, Any]) -> Happened:
    """A charge's answer (`{status, transactionId, amount}` or `{error}`)."""
    return _CHARGE_ANSWERS.get(answer.get("status"), H.CHARGE_UNANSWERED)


_CHARGE_ANSWERS: dict[object, Happened] = {
    "COMPLETED": H.CHARGE_COMPLETED,
    "FAILED": H.CHARGE_FAILED,
    "REFUSED": H.CHARGE_REFUSED,
}


def refund_answer(status: str | None) -> Happened:
    """A refund's answer: the wallet's status, or None when it could not be reached."""
    return H.REFUND_DONE if status in ("REFUNDED", "NOTHING_TO_REFUND") else H.REFUND_UNANSWERED


def void_answer(status: str | None, canceled: bool = False) -> Happened:
    """A void's answer (a refund call): the wallet's status, or None when it could not be reached;
    `canceled` for the void of a canceled order (its answers are events)."""
    if status is None:
        return H.CANCEL_VOID_UNANSWERED if canceled else H.VOID_UNANSWERED
    if status == "REFUNDED":
        return H.CANCEL_VOID_REFUNDED if canceled else H.VOID_REFUNDED
    return H.CANCEL_VOID_NOTHING if canceled else H.VOID_NOTHING


def fail_reason(transition: Transition, detail: str) -> str | None:
    """The failReason of the transition's event: fixed by the table, or the wallet's own words
    (a failed refund)."""
    if transition.event == ev.REFUND_FAILED:
        return detail[:FAIL_REASON_MAX]
    return transition.fail_reason


def void_detail(status: str) -> str:
    return f"void: {status}"


# ---- the refund step ---------------------------------------------------------------------------


class RefundStep(StrEnum):
    """What a refund request does to the order's payment."""

    VOID_FIRST = "VOID_FIRST"  # timed out or canceled before any charge: void at the wallet, remember it
    NOTHING = "NOTHING"  # never charged, declined, voided, refunded or failed: nothing to give back
    ASK = "ASK"  # refund asked for (CHARGED -> REFUND_PENDING with REFUND_INITIATED)
    RETRY = "RETRY"  # an operator's retry of a failed refund (REFUND_FAILED -> REFUND_PENDING)
    REFUND = "REFUND"  # refund pending: ask the wallet


def refund_reason(event_name: str) -> str:
    """The reason the wallet writes in its ledger for a refund or void asked for by `event_name`."""
    name = ev.ALIASES.get(event_name, event_name)
    if name == ev.INVENTORY_INSUFFICIENT:
        return "out of stock"
    if name == ev.REFUND_RETRY_REQUESTED:
        return RETRY_REASON
    return CANCEL_REASON if name == ev.ORDER_CANCEL_REQUESTED else "order timed out"


def is_cancel(event_name: str) -> bool:
    return event_name == ev.ORDER_CANCEL_REQUESTED


def early_void_detail(event_name: str) -> str:
    """The detail of a row voided before any charge: why (the voider answers a cancel's)."""
    return CANCEL_VOID_DETAIL if is_cancel(event_name) else EARLY_VOID_DETAIL


def voided_for_cancel(payment: Payment) -> bool:
    """A VOID_PENDING row the voider must answer for: a canceled order's void."""
    return payment.detail == CANCEL_VOID_DETAIL


def voider_reason(payment: Payment) -> str:
    """The reason the voider gives the wallet."""
    return CANCEL_REASON if voided_for_cancel(payment) else VOID_REASON


def refund_step(status: Status | None, requested: bool, retry: bool = False) -> RefundStep:
    """The next step of a refund for a payment in `status` (None: no row), for an
    INVENTORY_INSUFFICIENT or (`requested`) an ORDER_TIMED_OUT or ORDER_CANCEL_REQUESTED that Order
    confirmed, or (`retry`) an operator's REFUND_RETRY_REQUESTED. A payment declined, voided (or
    being voided), refunded or failed has nothing new to do: its own event already settled the
    order; only a retry takes a failed refund up again."""
    if retry:
        if apply(status, H.REFUND_RETRY_WANTED) is not None:
            return RefundStep.RETRY
        return RefundStep.REFUND if status == S.REFUND_PENDING else RefundStep.NOTHING
    if status is None:
        return RefundStep.VOID_FIRST if requested else RefundStep.NOTHING
    if apply(status, H.REFUND_WANTED) is not None:
        return RefundStep.ASK
    if status == S.REFUND_PENDING:
        return RefundStep.REFUND
    return RefundStep.NOTHING


@dataclass(frozen=True)
class Payment:
    """A payments row."""

    order_id: str
    user_id: str
    amount: Decimal
    currency: str
    status: Status
    transaction_id: str | None = None
    detail: str = ""


# ---- what Payment did for an order (the saga map) -------------------------------------------------

_EARLY_VOIDS = (EARLY_VOID_DETAIL, CANCEL_VOID_DETAIL)


def records(p: Payment, created_at: datetime, updated_at: datetime) -> list[Record]:
    """What Payment did for the order, told from its one row: what the charge (or a void that came
    before any charge) decided when the row was written, and where the refund or void stands if
    the row moved since. A void the voider settled keeps only its answer (the row no longer says
    whether it followed a charge without an answer or came first)."""
    amount = f"{p.amount:.2f} {p.currency}"
    charged = Record("charge", f"charged {amount} to the wallet", created_at, DONE, p.transaction_id or "")
    s = p.status
    if s == S.CHARGED:
        return [charged]
    if s == S.DECLINED:
        return [Record("charge", "declined: not enough money in the wallet", created_at, FAILED)]
    if s in (S.REFUND_PENDING, S.REFUNDED, S.REFUND_FAILED):
        refund = {
            S.REFUND_PENDING: Record("refund", f"refund of {amount} asked of the wallet", updated_at, PENDING),
            S.REFUNDED: Record("refund", f"refunded {amount} to the wallet", updated_at, DONE, p.detail),
            S.REFUND_FAILED: Record("refund", "the refund failed: an operator must act", updated_at, FAILED, p.detail),
        }[s]
        return [charged, refund]
    if p.detail in _EARLY_VOIDS:  # a timeout or cancel before any charge: voided first
        state = PENDING if s == S.VOID_PENDING else DONE
        what = "voiding at the wallet (before any charge)" if state == PENDING else "voided before any charge"
        return [Record("refund", what, created_at, state, p.detail)]
    if s == S.VOID_PENDING:  # the charge had no answer: it may have landed, so it is voided
        return [
            Record("charge", "no answer from the wallet: the charge may have landed", created_at, FAILED),
            Record("refund", "voiding the charge (retried until the wallet answers)", updated_at, PENDING),
        ]
    if not p.detail:  # the order was voided before its charge arrived: the wallet refused it
        return [Record("charge", "refused: the order had been voided first", created_at, FAILED)]
    return [Record("refund", f"voided at the wallet ({p.detail})", updated_at, DONE)]
