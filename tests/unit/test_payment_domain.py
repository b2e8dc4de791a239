"""Payment's rules (`tinysaga.payment.domain`): the transition table of a payment row, how the
wallet's answers are read, and the refund step."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.payment.domain import (
    CANCEL_VOID_DETAIL,
    EARLY_VOID_DETAIL,
    FINAL,
    TRANSITIONS,
    VOID_REASON,
    Happened,
    Payment,
    RefundStep,
    Status,
    apply,
    charge_answer,
    early_void_detail,
    fail_reason,
    refund_answer,
    refund_reason,
    refund_step,
    void_answer,
    voided_for_cancel,
    voider_reason,
)

H = Happened


@pytest.mark.parametrize("final", sorted(FINAL))
@pytest.mark.parametrize("happened", list(Happened))
def test_nothing_moves_a_settled_payment(final: Status, happened: Happened) -> None:
    assert apply(final, happened) is None


def test_no_transition_out_of_refunded() -> None:
    assert not [k for k in TRANSITIONS if k[0] == Status.REFUNDED]


@pytest.mark.parametrize(
    "answer, to, event, reason",
    [
        ({"transactionId": "t", "status": "COMPLETED", "amount": 1.0}, Status.CHARGED, ev.PAYMENT_DONE, None),
        (
            {"transactionId": "t", "status": "FAILED", "amount": 1.0},
            Status.DECLINED,
            ev.PAYMENT_FAIL,
            "insufficientFund",
        ),
        ({"transactionId": None, "status": "REFUSED", "amount": 1.0}, Status.VOIDED, ev.PAYMENT_FAIL, "serverError"),
        ({"error": "wallet down"}, Status.VOID_PENDING, ev.PAYMENT_FAIL, "serverError"),
        ({"status": "SOMETHING_NEW"}, Status.VOID_PENDING, ev.PAYMENT_FAIL, "serverError"),
    ],
)
def test_a_charge_answer_decides_the_row_and_its_event(
    answer: dict[str, object], to: Status, event: str, reason: str | None
) -> None:
    change = apply(None, charge_answer(answer))
    assert change is not None
    assert (change.to, change.event, change.fail_reason) == (to, event, reason)


def test_a_charge_moves_only_a_payment_not_yet_written() -> None:
    for status in Status:
        for h in (H.CHARGE_COMPLETED, H.CHARGE_FAILED, H.CHARGE_REFUSED, H.CHARGE_UNANSWERED):
            assert apply(status, h) is None


def test_a_refund_is_asked_for_only_once_charged_and_answered_only_when_pending() -> None:
    assert [s for s in Status if apply(s, H.REFUND_WANTED)] == [Status.CHARGED]
    change = apply(Status.CHARGED, H.REFUND_WANTED)
    assert change is not None and (change.to, change.event) == (Status.REFUND_PENDING, ev.REFUND_INITIATED)
    for h, to, event in (
        (H.REFUND_DONE, Status.REFUNDED, ev.REFUND_DONE),
        (H.REFUND_UNANSWERED, Status.REFUND_FAILED, ev.REFUND_FAILED),
    ):
        assert [s for s in Status if apply(s, h)] == [Status.REFUND_PENDING]
        change = apply(Status.REFUND_PENDING, h)
        assert change is not None and (change.to, change.event) == (to, event)


@pytest.mark.parametrize(
    "status, happened",
    [(None, "REFUNDED"), (None, "NOTHING_TO_REFUND"), (Status.VOID_PENDING, "NOTHING_TO_REFUND")],
)
def test_a_void_of_nothing_taken_is_voided_quietly(status: Status | None, happened: str) -> None:
    change = apply(status, void_answer(happened))
    assert change is not None and change.to == Status.VOIDED and change.event is None


def test_the_voider_says_refund_done_when_the_debit_had_landed() -> None:
    change = apply(Status.VOID_PENDING, void_answer("REFUNDED"))
    assert change is not None and (change.to, change.event) == (Status.VOIDED, ev.REFUND_DONE)


def test_a_void_the_wallet_does_not_answer_stays_pending() -> None:
    change = apply(None, void_answer(None))
    assert change is not None and change.to == Status.VOID_PENDING and change.event is None
    assert apply(Status.VOID_PENDING, void_answer(None)) is None


@pytest.mark.parametrize(
    "status, happened", [("REFUNDED", H.REFUND_DONE), ("NOTHING_TO_REFUND", H.REFUND_DONE), (None, H.REFUND_UNANSWERED)]
)
def test_refund_answers(status: str | None, happened: Happened) -> None:
    assert refund_answer(status) == happened


def test_a_failed_refund_carries_the_wallet_words_cut_to_the_wire_limit() -> None:
    change = apply(Status.REFUND_PENDING, H.REFUND_UNANSWERED)
    assert change is not None
    assert fail_reason(change, "x" * 300) == "x" * 200
    done = apply(Status.REFUND_PENDING, H.REFUND_DONE)
    assert done is not None and fail_reason(done, "REFUNDED") is None


def test_every_event_of_the_table_is_an_outcome_of_payment_s_steps() -> None:
    outcomes = {o for s in saga.steps_of(saga.PAYMENT) for o in s.outcomes}
    assert {t.event for t in TRANSITIONS.values() if t.event} == outcomes


@pytest.mark.parametrize(
    "status, timed_out, step",
    [
        (None, True, RefundStep.VOID_FIRST),
        (None, False, RefundStep.NOTHING),
        (Status.CHARGED, False, RefundStep.ASK),
        (Status.CHARGED, True, RefundStep.ASK),
        (Status.REFUND_PENDING, False, RefundStep.REFUND),
        (Status.DECLINED, True, RefundStep.NOTHING),
        (Status.VOIDED, True, RefundStep.NOTHING),
        (Status.VOID_PENDING, False, RefundStep.NOTHING),
        (Status.REFUNDED, False, RefundStep.NOTHING),
        (Status.REFUND_FAILED, False, RefundStep.NOTHING),
    ],
)
def test_the_refund_step(status: Status | None, timed_out: bool, step: RefundStep) -> None:
    assert refund_step(status, timed_out) == step


def test_refund_reasons() -> None:
    assert refund_reason(ev.INVENTORY_INSUFFICIENT) == "out of stock"
    assert refund_reason(ev.ORDER_TIMED_OUT) == "order timed out"
    assert refund_reason(ev.ORDER_CANCEL_REQUESTED) == "order canceled"


@pytest.mark.parametrize(
    "status, wallet, to, event",
    [
        (None, "NOTHING_TO_REFUND", Status.VOIDED, ev.PAYMENT_VOIDED),
        (None, "REFUNDED", Status.VOIDED, ev.REFUND_DONE),
        (None, None, Status.VOID_PENDING, None),
        (Status.VOID_PENDING, "NOTHING_TO_REFUND", Status.VOIDED, ev.PAYMENT_VOIDED),
        (Status.VOID_PENDING, "REFUNDED", Status.VOIDED, ev.REFUND_DONE),
    ],
)
def test_a_canceled_order_s_void_answers_the_cancel(
    status: Status | None, wallet: str | None, to: Status, event: str | None
) -> None:
    change = apply(status, void_answer(wallet, canceled=True))
    assert change is not None and (change.to, change.event) == (to, event)


def test_a_canceled_order_s_void_the_wallet_does_not_answer_stays_pending() -> None:
    assert apply(Status.VOID_PENDING, void_answer(None, canceled=True)) is None


def test_the_voider_knows_a_canceled_order_s_void_by_its_detail() -> None:
    assert early_void_detail(ev.ORDER_CANCEL_REQUESTED) == CANCEL_VOID_DETAIL
    assert early_void_detail(ev.ORDER_TIMED_OUT) == EARLY_VOID_DETAIL
    cancel = Payment("o1", "u1", Decimal(1), "USD", Status.VOID_PENDING, detail=CANCEL_VOID_DETAIL)
    assert voided_for_cancel(cancel) and voider_reason(cancel) == "order canceled"
    for detail in (EARLY_VOID_DETAIL, ""):
        other = Payment("o1", "u1", Decimal(1), "USD", Status.VOID_PENDING, detail=detail)
        assert not voided_for_cancel(other) and voider_reason(other) == VOID_REASON


def test_statuses_are_the_column_strings() -> None:
    assert [str(s) for s in Status] == [
        "CHARGED",
        "DECLINED",
        "VOID_PENDING",
        "VOIDED",
        "REFUND_PENDING",
        "REFUNDED",
        "REFUND_FAILED",
    ]
