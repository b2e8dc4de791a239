"""What each participant tells of an order for the saga map (`contracts.records`): the records its
own rows make (Payment's payment row, Wallet's ledger rows, Inventory's reservation, Notification's
notifications), each under a step of the saga definition, and the answer's shape both ways."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tinysaga.contracts import records, saga
from tinysaga.contracts.records import DONE, FAILED, PENDING, Record
from tinysaga.inventory import domain as inventory
from tinysaga.notification import domain as notification
from tinysaga.payment import domain as payment
from tinysaga.payment.domain import Payment, Status
from tinysaga.wallet import domain as wallet

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(seconds=3)
OID = str(uuid.uuid4())


def told(rs: list[Record]) -> list[tuple[str, str, datetime]]:
    return [(r.step, r.state, r.at) for r in rs]


def pay(status: Status, detail: str = "", tx: str | None = None) -> list[Record]:
    p = Payment(OID, "user-1", Decimal("20.00"), "USD", status, tx, detail)
    return payment.records(p, T0, T1)


def test_payment_tells_the_charge_when_its_row_was_written_and_the_refund_where_it_stands() -> None:
    assert told(pay(Status.CHARGED, tx="tx-1")) == [("charge", DONE, T0)]
    assert pay(Status.CHARGED, tx="tx-1")[0].what == "charged 20.00 USD to the wallet"
    assert told(pay(Status.DECLINED)) == [("charge", FAILED, T0)]
    assert told(pay(Status.REFUND_PENDING, tx="tx-1")) == [("charge", DONE, T0), ("refund", PENDING, T1)]
    assert told(pay(Status.REFUNDED, "refunded", "tx-1")) == [("charge", DONE, T0), ("refund", DONE, T1)]
    failed = pay(Status.REFUND_FAILED, "wallet said no", "tx-1")
    assert told(failed) == [("charge", DONE, T0), ("refund", FAILED, T1)] and failed[1].detail == "wallet said no"


def test_payment_tells_a_void_apart_from_a_charge() -> None:
    # a charge without an answer: it may have landed, so it is voided
    assert told(pay(Status.VOID_PENDING)) == [("charge", FAILED, T0), ("refund", PENDING, T1)]
    # a timeout or a cancel before any charge: the void came first
    assert told(pay(Status.VOIDED, payment.CANCEL_VOID_DETAIL)) == [("refund", DONE, T0)]
    assert told(pay(Status.VOID_PENDING, payment.EARLY_VOID_DETAIL)) == [("refund", PENDING, T0)]
    # the charge came after the void: the wallet refused it
    assert told(pay(Status.VOIDED)) == [("charge", FAILED, T0)]
    # the voider settled it: only its answer is certain
    assert told(pay(Status.VOIDED, payment.void_detail("NOTHING_TO_REFUND"))) == [("refund", DONE, T1)]


def test_every_payment_status_is_told() -> None:
    for status in Status:
        assert pay(status, tx="tx-1"), status


def test_wallet_tells_each_ledger_row_of_the_order() -> None:
    debit = wallet.record_of(wallet.PAYMENT, wallet.Status.COMPLETED, Decimal("5"), "USD", T0, "order x")
    short = wallet.record_of(wallet.PAYMENT, wallet.Status.FAILED, Decimal("5"), "USD", T0, "order x: insufficient")
    back = wallet.record_of(wallet.REFUND, wallet.Status.REFUNDED, Decimal("5"), "USD", T1, "refund of order x")
    void = wallet.record_of(wallet.REFUND, wallet.Status.NOTHING_TO_REFUND, Decimal("0"), "USD", T1, "refund")
    assert told([debit, short, back, void]) == [("charge", DONE, T0), ("charge", FAILED, T0)] + [
        ("refund", DONE, T1),
        ("refund", DONE, T1),
    ]
    assert debit.what == "debited 5.00 USD from the wallet" and back.what == "credited 5.00 USD back to the wallet"
    assert "late debit is refused" in void.what


def test_inventory_tells_the_reservation_and_its_release() -> None:
    assert told(inventory.records(inventory.RESERVED, "sku-1", 2, T0, T0)) == [("reserve", DONE, T0)]
    rejected = inventory.records(inventory.REJECTED, "sku-1", 2, T0, T0)
    assert told(rejected) == [("reserve", FAILED, T0)] and "2 × sku-1" in rejected[0].what
    assert told(inventory.records(inventory.RELEASED, "sku-1", 2, T0, T1)) == [
        ("reserve", DONE, T0),
        ("release", DONE, T1),
    ]
    assert told(inventory.records(inventory.CANCELLED, "sku-1", 2, T0, T0)) == [("release", DONE, T0)]


def test_notification_tells_each_message_and_what_became_of_it() -> None:
    sent = notification.record_of("ORDER_PLACED", "EMAIL", "SENT", "Your order is placed", T0, T1, None)
    skipped = notification.record_of("ORDER_PLACED", "SMS", "SKIPPED", "Your order is placed", T0, None, "no phone")
    waiting = notification.record_of("ORDER_PLACED", "SMS", "PENDING", "Your order is placed", T0, None, None)
    assert told([sent, skipped, waiting]) == [("notify", DONE, T1), ("notify", DONE, T0), ("notify", PENDING, T0)]
    assert sent.what == "ORDER_PLACED: email sent" and sent.detail == "Your order is placed"
    assert skipped.what == "ORDER_PLACED: SMS not sent (no phone)"


def test_an_answer_reads_back_as_the_same_records_oldest_first() -> None:
    rs = [Record("refund", "refunded", T1, DONE, "why"), Record("charge", "charged", T0)]
    body = records.answer("payment", OID, rs)
    assert [r["step"] for r in body["records"]] == ["charge", "refund"]
    assert records.parse("payment", OID, body) == sorted(rs, key=lambda r: r.at)


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"service": "wallet", "orderId": OID, "records": []},  # another service's
        {"service": "payment", "orderId": str(uuid.uuid4()), "records": []},  # another order's
        {"service": "payment", "orderId": OID, "records": "none"},
        {"service": "payment", "orderId": OID, "records": [{"step": "charge"}]},
        {"service": "payment", "orderId": OID, "records": [{"step": "teleport", "what": "x", "at": T0.isoformat()}]},
        {"service": "payment", "orderId": OID, "records": [{"step": "charge", "what": "x", "at": "yesterday"}]},
        {"service": "payment", "orderId": OID, "records": [{"step": "charge", "what": "x", "at": "2026-01-01T00:00"}]},
        {
            "service": "payment",
            "orderId": OID,
            "records": [{"step": "charge", "what": "x", "at": T0.isoformat(), "state": "meh"}],
        },
        {"service": "payment", "orderId": OID, "records": [None]},
    ],
)
def test_an_answer_that_is_not_the_participants_records_of_the_order_is_refused(body: object) -> None:
    with pytest.raises(records.InvalidRecords):
        records.parse("payment", OID, body)


def test_a_record_names_a_step_of_the_definition() -> None:
    for step in saga.STEPS:
        assert Record(step.name, "x", T0).step == step.name
    with pytest.raises(records.InvalidRecords):
        Record("not_a_step", "x", T0)
