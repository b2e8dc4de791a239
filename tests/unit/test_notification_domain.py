"""Which events notify the user and what they say (`tinysaga.notification.domain`)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.notification.domain import notification_for

ORDER_ID = "ord-7f3a"


def event(name: str, **fields: object) -> ev.Event:
    base: dict[str, object] = {
        "orderId": ORDER_ID,
        "userId": "user-1",
        "productId": "widget-9",
        "productQuantity": 3,
        "totalAmount": Decimal("19.99") * 3,
        "currency": "USD",
    }
    return ev.new_event(name, correlation_id=ORDER_ID, **{**base, **fields})


NOTIFIABLE = {
    ev.PAYMENT_DONE: "PAYMENT_DONE",
    ev.PAYMENT_FAIL: "PAYMENT_FAILED",
    ev.INVENTORY_RESERVED: "ORDER_PLACED",
    ev.INVENTORY_RESERVED_SEED_ALIAS: "ORDER_PLACED",
    ev.INVENTORY_INSUFFICIENT: "INVENTORY_INSUFFICIENT",
    ev.REFUND_DONE: "REFUND_DONE",
    ev.REFUND_FAILED: "REFUND_FAILED",
    ev.ORDER_TIMED_OUT: "ORDER_TIMED_OUT",
    ev.ORDER_CANCEL_REQUESTED: "ORDER_CANCELING",
    ev.ORDER_CANCELED: "ORDER_CANCELED",
    ev.ORDER_SHIPPED: "ORDER_SHIPPED",
    ev.ORDER_DELIVERED: "ORDER_DELIVERED",
}


@pytest.mark.parametrize(("name", "kind"), list(NOTIFIABLE.items()))
def test_each_notifiable_event_has_its_type_and_names_the_order(name: str, kind: str) -> None:
    got = notification_for(event(name))
    assert got is not None
    typ, message = got
    assert typ == kind
    assert ORDER_ID in message
    assert message.strip() and message[0].isupper()


def test_every_notification_type_is_distinct_per_event() -> None:
    canonical = {n: t for n, t in NOTIFIABLE.items() if n != ev.INVENTORY_RESERVED_SEED_ALIAS}
    assert len(set(canonical.values())) == len(canonical)


def test_payment_fail_wording_differs_for_insufficient_funds_and_server_error() -> None:
    poor = notification_for(event(ev.PAYMENT_FAIL, failReason=ev.INSUFFICIENT_FUND))
    broken = notification_for(event(ev.PAYMENT_FAIL, failReason=ev.SERVER_ERROR))
    assert poor is not None and broken is not None
    assert poor[0] == broken[0] == "PAYMENT_FAILED"
    assert poor[1] != broken[1]
    assert "not enough money" in poor[1]
    assert "not enough money" not in broken[1]
    assert "problem" in broken[1]
    # either way the user is told nothing was taken
    assert "Nothing was charged" in poor[1] and "Nothing was charged" in broken[1]


def test_payment_fail_without_a_reason_is_not_blamed_on_the_wallet_balance() -> None:
    got = notification_for(event(ev.PAYMENT_FAIL))
    assert got is not None
    assert "not enough money" not in got[1]


@pytest.mark.parametrize("name", [ev.PAYMENT_DONE, ev.INVENTORY_INSUFFICIENT, ev.REFUND_DONE])
def test_money_messages_show_the_exact_amount_and_currency(name: str) -> None:
    got = notification_for(event(name))
    assert got is not None
    assert "59.97 USD" in got[1]


def test_an_amount_is_shown_with_two_places() -> None:
    got = notification_for(event(ev.PAYMENT_DONE, totalAmount=Decimal("10"), currency="EUR"))
    assert got is not None and "10.00 EUR" in got[1]


@pytest.mark.parametrize("missing", [{"totalAmount": None}, {"currency": None}])
def test_without_amount_or_currency_the_message_says_the_amount(missing: dict[str, object]) -> None:
    got = notification_for(event(ev.REFUND_DONE, **missing))
    assert got is not None
    assert "the amount" in got[1]
    assert "None" not in got[1]


def test_order_placed_tells_what_was_ordered() -> None:
    for name in (ev.INVENTORY_RESERVED, ev.INVENTORY_RESERVED_SEED_ALIAS):
        got = notification_for(event(name))
        assert got is not None
        assert "3 x widget-9" in got[1]


def test_out_of_stock_names_the_product_and_promises_a_refund() -> None:
    got = notification_for(event(ev.INVENTORY_INSUFFICIENT))
    assert got is not None
    assert "widget-9" in got[1] and "refund" in got[1]


def test_the_order_s_changes_say_what_happened() -> None:
    canceling = notification_for(event(ev.ORDER_CANCEL_REQUESTED, orderStatus="CANCELING"))
    canceled = notification_for(event(ev.ORDER_CANCELED, orderStatus="CANCELED"))
    shipped = notification_for(event(ev.ORDER_SHIPPED, orderStatus="ON_THE_WAY"))
    delivered = notification_for(event(ev.ORDER_DELIVERED, orderStatus="DELIVERED"))
    assert canceling == ("ORDER_CANCELING", f"We are canceling your order {ORDER_ID}; any payment will be refunded.")
    assert canceled == ("ORDER_CANCELED", f"Your order {ORDER_ID} is canceled.")
    assert shipped == ("ORDER_SHIPPED", f"Your order {ORDER_ID} is on the way: 3 x widget-9.")
    assert delivered == ("ORDER_DELIVERED", f"Your order {ORDER_ID} was delivered.")


def test_the_notified_events_are_the_ones_the_saga_routes_to_notify() -> None:
    routed = set(saga.BY_NAME["notify"].handled_events)
    assert {ev.ALIASES.get(n, n) for n in NOTIFIABLE} == routed - {ev.REFUND_INITIATED}  # its REFUND_DONE tells


@pytest.mark.parametrize(
    "name",
    [
        ev.ORDER_INITIATED,
        ev.USER_REGISTERED,
        ev.REFUND_INITIATED,
        ev.PAYMENT_VOIDED,
        ev.INVENTORY_RELEASED,
        "SAGA_TIMEOUT",
        "UNKNOWN",
        "payment_done",
    ],
)
def test_events_that_do_not_notify_give_none(name: str) -> None:
    assert notification_for(event(name)) is None
