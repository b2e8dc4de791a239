"""Notifications: one email (in the SMTP sink) and one SMS record per notifiable event, once."""

from __future__ import annotations

import time

from tests.integration.test_events_on_kafka import produce, read_topic
from tests.support import ApiUser, eventually, register, run_sync, wait_at_rest
from tinysaga.platform.settings import Settings


def mails_for(admin: ApiUser, email: str) -> list[dict]:
    return [m for m in admin.get("/api/admin/notifications/mail", params={"limit": 500}).json() if m["to"] == email]


def sms_for(admin: ApiUser, phone: str, order_id: str) -> list[dict]:
    return [
        s
        for s in admin.get("/api/admin/notifications/sms", params={"limit": 500}).json()
        if s["to"] == phone and order_id in s["body"]
    ]


def test_placed_order_notifies_by_email_sms_and_inbox_once(
    gateway: str, product, admin: ApiUser, settings: Settings
) -> None:
    u = register(gateway, phone="+15550199")
    u.deposit(10)
    oid = u.place(product(stock=1, price="2.00"))
    assert u.wait_terminal(oid)["orderStatus"] == "PLACED"

    def sent() -> list[dict] | None:
        mine = [n for n in u.get("/api/notifications").json() if n["orderId"] == oid and n["status"] == "SENT"]
        return mine if len(mine) == 4 else None

    inbox = eventually(sent)
    assert sorted((n["type"], n["channel"]) for n in inbox) == [
        ("ORDER_PLACED", "EMAIL"),
        ("ORDER_PLACED", "SMS"),
        ("PAYMENT_DONE", "EMAIL"),
        ("PAYMENT_DONE", "SMS"),
    ]
    mails = eventually(lambda: [m for m in mails_for(admin, u.email) if oid in m["body"]])
    assert len(mails) == 2 and all(m["subject"].startswith("Tiny-Saga:") for m in mails)
    assert len(sms_for(admin, "+15550199", oid)) == 2

    # every event of this order delivered again: nothing is sent twice
    records = run_sync(read_topic(settings, settings.topic, {oid}))
    run_sync(produce(settings, [(r.key, r.value, list(r.headers)) for r in records]))
    marker = register(gateway, tag="marker")
    marker.deposit(5)
    marker.wait_terminal(marker.place(product(stock=1, price="1.00")))
    run_sync(wait_at_rest(settings))
    time.sleep(1)
    assert len([n for n in u.get("/api/notifications").json() if n["orderId"] == oid]) == 4
    assert len([m for m in mails_for(admin, u.email) if oid in m["body"]]) == 2
    assert len(sms_for(admin, "+15550199", oid)) == 2


def test_a_user_without_a_phone_number_gets_the_email_and_no_sms_retries(gateway: str, product) -> None:
    u = register(gateway, phone=None)
    u.deposit(10)
    oid = u.place(product(stock=1, price="2.00"))
    assert u.wait_terminal(oid)["orderStatus"] == "PLACED"

    def settled() -> list[dict] | None:
        mine = [n for n in u.get("/api/notifications").json() if n["orderId"] == oid]
        return mine if len(mine) == 4 and all(n["status"] != "PENDING" for n in mine) else None

    # the contact is known (USER_REGISTERED came first), so there is nothing to wait for: the SMS
    # rows are added as skipped (ADR 63) instead of being retried with backoff
    rows = eventually(settled, timeout=15)
    assert {(n["channel"], n["status"]) for n in rows} == {("EMAIL", "SENT"), ("SMS", "SKIPPED")}


def test_payment_failure_is_notified(gateway: str, product, admin: ApiUser) -> None:
    u = register(gateway)
    oid = u.place(product(stock=1, price="3.00"))
    assert u.wait_terminal(oid)["failReason"] == "INSUFFICIENT_FUNDS"
    inbox = eventually(lambda: [n for n in u.get("/api/notifications").json() if n["type"] == "PAYMENT_FAILED"])
    assert "not enough money" in inbox[0]["message"]
    assert eventually(lambda: mails_for(admin, u.email))


def test_a_channel_that_is_down_is_retried_without_holding_up_the_other(
    gateway: str, product, admin: ApiUser, stack
) -> None:
    u = register(gateway, phone="+15550142")
    u.deposit(5)
    stack.hold("smtp-sink")
    try:
        oid = u.place(product(stock=1, price="1.00"))
        assert u.wait_terminal(oid)["orderStatus"] == "PLACED"
        # SMS goes out while email waits for its server
        eventually(lambda: len(sms_for(admin, "+15550142", oid)) == 2)
        pending = [n for n in u.get("/api/notifications").json() if n["channel"] == "EMAIL" and n["orderId"] == oid]
        assert pending and all(n["status"] == "PENDING" for n in pending)
    finally:
        stack.release("smtp-sink")
    # once the mail server is back, the retry delivers each email once
    mails = eventually(
        lambda: (m := [m for m in mails_for(admin, u.email) if oid in m["body"]]) and len(m) == 2 and m, timeout=90
    )
    assert len(mails) == 2
