"""Pure rules of the wallet, the event contract, notifications and money."""

from __future__ import annotations

import uuid
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinysaga.contracts.events import Event, InvalidEvent, new_event
from tinysaga.contracts.ids import is_product_id
from tinysaga.notification.domain import notification_for
from tinysaga.wallet.domain import LedgerEntry, Status, debit_outcome, refund_outcome

PAID = LedgerEntry("t1", "PAYMENT", Status.COMPLETED, Decimal("10.00"))
DECLINED = LedgerEntry("t1", "PAYMENT", Status.FAILED, Decimal("10.00"))
REFUND = LedgerEntry("t2", "REFUND", Status.REFUNDED, Decimal("10.00"))
VOID = LedgerEntry("t3", "REFUND", Status.NOTHING_TO_REFUND, Decimal("0"))


@given(balance=st.decimals(0, 10_000, places=2), amount=st.decimals("0.01", 10_000, places=2))
def test_debit_charges_only_what_is_there(balance: Decimal, amount: Decimal) -> None:
    outcome = debit_outcome(balance, amount, None, None)
    assert outcome == (Status.COMPLETED if balance >= amount else Status.FAILED)


def test_a_retried_debit_is_not_a_second_charge_and_a_late_one_is_refused() -> None:
    assert debit_outcome(Decimal(100), Decimal(10), PAID, None) == "EXISTING"
    assert debit_outcome(Decimal(100), Decimal(10), DECLINED, None) == "EXISTING"
    assert debit_outcome(Decimal(100), Decimal(10), None, VOID) == Status.REFUSED
    assert debit_outcome(Decimal(100), Decimal(10), None, REFUND) == Status.REFUSED


def test_refund_only_what_was_charged_once() -> None:
    assert refund_outcome(PAID, None) == Status.REFUNDED
    assert refund_outcome(PAID, REFUND) == "EXISTING"
    assert refund_outcome(None, None) == Status.NOTHING_TO_REFUND
    assert refund_outcome(DECLINED, None) == Status.NOTHING_TO_REFUND


def test_event_round_trip_keeps_exact_money_and_rfc3339_time() -> None:
    e = new_event(
        "PAYMENT_DONE",
        correlation_id="c",
        orderId="o1",
        userId="u1",
        price=Decimal("19.99"),
        totalAmount=Decimal("19.99") * 3,
        productQuantity=3,
        currency="USD",
    )
    raw = e.to_bytes()
    body = orjson.loads(raw)
    assert body["totalAmount"] == 59.97 and body["version"] == "1.0" and body["timestamp"].endswith("Z")
    back = Event.from_bytes(raw)
    assert back.totalAmount == Decimal("59.97") and back.eventId == e.eventId and back.orderId == "o1"


def test_unknown_fields_are_ignored_and_the_seed_alias_is_canonicalised() -> None:
    raw = orjson.dumps(
        {
            "eventId": str(uuid.uuid4()),
            "correlationId": "c",
            "eventName": "INVENTORY_RESERVERVED",
            "version": "1.0",
            "timestamp": "2023-05-01T12:34:56Z",
            "orderId": "1",
            "extra": {"x": 1},
        }
    )
    e = Event.from_bytes(raw)
    assert e.name_canonical == "INVENTORY_RESERVED"


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"[1]",
        b'"s"',
        b'{"eventName": "X"}',
        b'{"correlationId": "c", "eventName": "X", "version": "2.0"}',
        b'{"correlationId": "c", "eventName": "X", "productQuantity": 0}',
        b'{"correlationId": "c", "eventName": "X", "totalAmount": 1.234}',
        b'{"correlationId": "c", "eventName": "X", "pad": "' + b"a" * 70_000 + b'"}',
    ],
)
def test_invalid_messages_are_invalid_events(raw: bytes | None) -> None:
    with pytest.raises(InvalidEvent):
        Event.from_bytes(raw)


@given(st.binary(max_size=300))
def test_any_bytes_are_an_event_or_an_invalid_event(raw: bytes) -> None:
    try:
        Event.from_bytes(raw)
    except InvalidEvent:
        pass


def test_notifications_say_what_happened() -> None:
    def ev_(name: str, **kw: object) -> Event:
        return new_event(
            name,
            correlation_id="c",
            orderId="o-42",
            userId="u",
            totalAmount=Decimal("5.00"),
            currency="USD",
            productId="sku-x",
            productQuantity=1,
            **kw,
        )

    kinds = {
        n: notification_for(ev_(n))
        for n in (
            "PAYMENT_DONE",
            "INVENTORY_RESERVED",
            "INVENTORY_INSUFFICIENT",
            "REFUND_DONE",
            "REFUND_FAILED",
            "ORDER_TIMED_OUT",
        )
    }
    assert {k: v[0] for k, v in kinds.items()} == {
        "PAYMENT_DONE": "PAYMENT_DONE",
        "INVENTORY_RESERVED": "ORDER_PLACED",
        "INVENTORY_INSUFFICIENT": "INVENTORY_INSUFFICIENT",
        "REFUND_DONE": "REFUND_DONE",
        "REFUND_FAILED": "REFUND_FAILED",
        "ORDER_TIMED_OUT": "ORDER_TIMED_OUT",
    }
    assert all("o-42" in v[1] for v in kinds.values())
    funds = notification_for(ev_("PAYMENT_FAIL", failReason="insufficientFund"))
    error = notification_for(ev_("PAYMENT_FAIL", failReason="serverError"))
    assert funds and error and funds[1] != error[1] and "not enough money" in funds[1]
    assert notification_for(ev_("ORDER_INITIATED")) is None


@pytest.mark.parametrize(
    "pid, ok",
    [
        ("sku-1", True),
        ("a.b_c-9", True),
        (".", False),
        ("..", False),
        ("-x", False),
        ("a/b", False),
        ("a\x00b", False),
        ("x" * 65, False),
    ],
)
def test_product_ids(pid: str, ok: bool) -> None:
    assert is_product_id(pid) is ok
