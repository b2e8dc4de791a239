"""Payment rules, pure. A payment row moves only along a row of `TRANSITIONS`: (its status, or None
before it exists; what happened) -> its new status and the event that says so. The wallet's answers
are read into what happened by the functions below; anything the table has no row for changes
nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tinysaga.contracts import events as ev


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
    CHARGE_REFUSED = "CHARGE_REFUSED"  # the order was voided first (it timed out): nothing moved
    CHARGE_UNANSWERED = "CHARGE_UNANSWERED"  # no answer (or an error): a debit may have landed
    REFUND_WANTED = "REFUND_WANTED"  # out of stock, or the saga timed out
    REFUND_DONE = "REFUND_DONE"  # the wallet gave the money back (or had nothing to give back)
    REFUND_UNANSWERED = "REFUND_UNANSWERED"  # the wallet could not or would not refund
    VOID_REFUNDED = "VOID_REFUNDED"  # a void: the debit had landed, and was given back
    VOID_NOTHING = "VOID_NOTHING"  # a void: nothing had been taken (a late debit is now refused)
    VOID_UNANSWERED = "VOID_UNANSWERED"  # a void the wallet did not answer


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
    # the refund: asked for (REFUND_INITIATED), then answered by the wallet
    (S.CHARGED, H.REFUND_WANTED): Transition(S.REFUND_PENDING, ev.REFUND_INITIATED),
    (S.REFUND_PENDING, H.REFUND_DONE): Transition(S.REFUNDED, ev.REFUND_DONE),
    (S.REFUND_PENDING, H.REFUND_UNANSWERED): Transition(S.REFUND_FAILED, ev.REFUND_FAILED),
    # the voider: a charge whose outcome was unknown
    (S.VOID_PENDING, H.VOID_REFUNDED): Transition(S.VOIDED, ev.REFUND_DONE),
    (S.VOID_PENDING, H.VOID_NOTHING): Transition(S.VOIDED),
}

FINAL = frozenset({S.DECLINED, S.VOIDED, S.REFUNDED, S.REFUND_FAILED})  # no way out (an operator acts)

PAYMENT_TYPES = ("WALLET",)
DETAIL_MAX = 500  # characters of the wallet's answer kept in the row's detail
FAIL_REASON_MAX = 200  # ... and in a REFUND_FAILED's failReason
EARLY_VOID_DETAIL = "voided before any charge: the saga timed out"
VOID_REASON = "void after a payment error"


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


def void_answer(status: str | None) -> Happened:
    """A void's answer (a refund call): the wallet's status, or None when it could not be reached."""
    if status is None:
        return H.VOID_UNANSWERED
    return H.VOID_REFUNDED if status == "REFUNDED" else H.VOID_NOTHING


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

    VOID_FIRST = "VOID_FIRST"  # timed out before any charge: void at the wallet, remember it
    NOTHING = "NOTHING"  # never charged, declined, voided, refunded or failed: nothing to give back
    ASK = "ASK"  # refund asked for (CHARGED -> REFUND_PENDING with REFUND_INITIATED)
    REFUND = "REFUND"  # refund pending: ask the wallet


def refund_reason(event_name: str) -> str:
    return "out of stock" if ev.ALIASES.get(event_name, event_name) == ev.INVENTORY_INSUFFICIENT else "order timed out"


def refund_step(status: Status | None, timed_out: bool) -> RefundStep:
    """The next step of a refund for a payment in `status` (None: no row), for an
    INVENTORY_INSUFFICIENT or (`timed_out`) an ORDER_TIMED_OUT that Order confirmed."""
    if status is None:
        return RefundStep.VOID_FIRST if timed_out else RefundStep.NOTHING
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
