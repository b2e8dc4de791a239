"""The wallet's batched charge (what Payment sends for the orders one poll brought), called on the
wallet's own port with the internal secret, as Payment calls it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx

from tests.support import ApiUser, register
from tinysaga.platform.secrets import internal_secret
from tinysaga.platform.settings import Settings


def charge(settings: Settings, debits: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{settings.port_of('wallet')}/internal/payments/batch",
        json={"debits": debits},
        headers={"x-internal-secret": internal_secret(settings)},
        timeout=10,
    )


def debit(user: ApiUser, amount: str, order_id: str | None = None) -> dict[str, object]:
    return {"orderId": order_id or str(uuid.uuid4()), "userId": user.user_id, "amount": amount, "currency": "USD"}


def test_a_batch_is_decided_in_order_and_each_order_is_charged_once(gateway: str, settings: Settings) -> None:
    a, b = register(gateway, tag="a"), register(gateway, tag="b")
    a.deposit(10)
    b.deposit(3)
    first = debit(a, "6.00")
    batch = [first, debit(b, "2.00"), debit(a, "5.00"), first, debit(a, "4.00"), debit(b, "2.00")]
    r = charge(settings, batch)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    # a: 10 - 6 = 4; 5 is more than is left; the repeated order gets the same answer; 4 fits
    assert [x["status"] for x in results] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED", "COMPLETED", "FAILED"]
    assert results[3] == results[0]
    assert a.balance() == Decimal("0.00") and b.balance() == Decimal("1.00")
    # the whole batch again: the same answers, nothing charged twice
    again = charge(settings, batch).json()["results"]
    assert again == results
    assert a.balance() == Decimal("0.00") and b.balance() == Decimal("1.00")
    ledger = [t for t in a.get("/api/wallet/transactions").json() if t["transactionType"] == "PAYMENT"]
    assert sorted((t["paymentStatus"], t["amount"]) for t in ledger) == [
        ("COMPLETED", 4.0),
        ("COMPLETED", 6.0),
        ("FAILED", 5.0),
    ]


def test_an_order_charged_to_another_wallet_is_an_error_for_that_order_only(gateway: str, settings: Settings) -> None:
    a, b = register(gateway, tag="a"), register(gateway, tag="b")
    a.deposit(5)
    b.deposit(5)
    order = str(uuid.uuid4())
    assert charge(settings, [debit(a, "1.00", order)]).json()["results"][0]["status"] == "COMPLETED"
    results = charge(settings, [debit(b, "1.00", order), debit(b, "2.00")]).json()["results"]
    assert "error" in results[0] and results[1]["status"] == "COMPLETED"
    assert a.balance() == Decimal("4.00") and b.balance() == Decimal("3.00")


def test_a_batch_for_a_user_with_no_wallet_yet_opens_it(gateway: str, settings: Settings) -> None:
    ghost = {"orderId": str(uuid.uuid4()), "userId": f"u-{uuid.uuid4()}", "amount": "1.00", "currency": "USD"}
    results = charge(settings, [ghost]).json()["results"]
    assert results[0]["status"] == "FAILED"  # a new wallet holds nothing


def test_bad_batches_are_refused_with_a_problem(settings: Settings) -> None:
    for body in ([], [{"orderId": "x"}], [{"orderId": "x", "userId": "u", "amount": "-1", "currency": "USD"}]):
        r = charge(settings, body)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    too_many = [{"orderId": str(i), "userId": "u", "amount": "1", "currency": "USD"} for i in range(501)]
    assert charge(settings, too_many).status_code == 422
