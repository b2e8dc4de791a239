"""Notification's steps (`notify`, `remember_contact`) against a fake repository, and what the
deliverer does with a due notification (`tinysaga.notification.domain.delivery_for`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from tests.unit.fakes import FakeUnitOfWork, deliver, deliver_batch
from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.notification.adapters import ChannelDown, Undeliverable
from tinysaga.notification.domain import (
    CONTACT_WAITS,
    Action,
    Contact,
    Delivery,
    Wanted,
    delivery_for,
    skipped_when_added,
    subject_for,
)
from tinysaga.notification.handlers import Deliverer, Looked, NotificationHandlers, retry_pause
from tinysaga.platform.retry import NOTIFICATION, pause

NOTIFICATION_SVC = "notification"


@dataclass
class FakeNotifications:
    """Notifications keyed as the table's unique key (order, type, channel), and contacts by user;
    `of(uow)` is the repository of a unit of work, with the same named methods as
    `NotificationRepository`."""

    rows: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    contact_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    wakes: int = 0  # the deliverer woken, after a commit that added some
    lookups: list[list[str]] = field(default_factory=list)  # the users of each contacts query
    adds: list[int] = field(default_factory=list)  # how many notifications each add_notifications call had

    def wake(self) -> None:
        self.wakes += 1

    def of(self, uow: FakeUnitOfWork) -> FakeNotifications:
        return self

    async def add_notifications(self, wanted: Sequence[Wanted]) -> bool:
        """Each notification's two rows in turn, as `NotificationRepository.add_notifications` adds a
        batch's: none where the order has a notification of its `unless` type, and a row whose
        (order, type, channel) is there already left as it is; whether a PENDING row was added."""
        self.adds.append(len(wanted))
        pending = False
        for w in wanted:
            if w.unless is not None and any(o == w.order_id and k == w.unless for o, k, _ in self.rows):
                continue
            for channel in ("EMAIL", "SMS"):
                key = (w.order_id, w.kind, channel)
                if key not in self.rows:
                    status = "SKIPPED" if channel in w.skipped else "PENDING"
                    self.rows[key] = {
                        "user_id": w.user_id,
                        "message": w.message,
                        "status": status,
                        "last_error": w.skipped.get(channel),
                        "attempts": 0,
                    }
                    pending |= status == "PENDING"
        return pending

    async def contacts(self, user_ids: Sequence[str]) -> dict[str, Contact]:
        """The known contacts of these users, by user (`NotificationRepository.contacts`)."""
        self.lookups.append(list(user_ids))
        return {u: Contact(c["email"], c["phone"]) for u, c in self.contact_rows.items() if u in user_ids}

    async def remember_contact(
        self, user_id: str | None, email: str | None, phone: str | None, name: str | None
    ) -> None:
        """Insert or replace the user's contact (a missing user id is refused, as NOT NULL does)."""
        assert user_id is not None, "not-null violation"
        self.contact_rows[user_id] = {"email": email, "phone": phone, "name": name}


@pytest.fixture
def store() -> FakeNotifications:
    return FakeNotifications()


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


def order_handlers(store: FakeNotifications) -> dict[str, Any]:
    return NotificationHandlers(store.of, added=store.wake).on_order_topic()


def user_handlers(store: FakeNotifications) -> dict[str, Any]:
    return NotificationHandlers(store.of).on_user_topic()


def saga_event(name: str, order_id: str = "o1", user_id: str | None = "u1", **fields: Any) -> ev.Event:
    base: dict[str, Any] = {
        "orderId": order_id,
        "userId": user_id,
        "productId": "widget",
        "productQuantity": 2,
        "totalAmount": Decimal("6.00"),
        "currency": "USD",
        "failReason": "TIMEOUT",
    }
    return ev.new_event(name, correlation_id=order_id, **{**base, **fields})


def registered(user_id: str | None = "u1", **fields: Any) -> ev.Event:
    base: dict[str, Any] = {"userId": user_id, "email": "ann@example.com", "name": "Ann", "phone": "+15550100"}
    return ev.new_event(ev.USER_REGISTERED, correlation_id=str(user_id), **{**base, **fields})


async def notify(store: FakeNotifications, uow: FakeUnitOfWork, event: ev.Event) -> bool:
    return await deliver(NOTIFICATION_SVC, order_handlers(store), event, uow)


# ---- notify --------------------------------------------------------------------------------------


async def test_an_outcome_adds_one_notification_per_channel(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    assert await notify(store, uow, saga_event(ev.PAYMENT_DONE))
    assert set(store.rows) == {("o1", "PAYMENT_DONE", "EMAIL"), ("o1", "PAYMENT_DONE", "SMS")}
    assert all(r["user_id"] == "u1" and "6.00 USD" in r["message"] for r in store.rows.values())
    assert store.wakes == 1
    assert not uow.published  # a notification is no event of the saga


async def test_a_channel_the_known_user_has_no_address_on_is_skipped_as_it_is_added(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    store.contact_rows["u1"] = {"email": "ann@example.com", "phone": None, "name": "Ann"}
    assert await notify(store, uow, saga_event(ev.PAYMENT_DONE))
    sms, email = store.rows[("o1", "PAYMENT_DONE", "SMS")], store.rows[("o1", "PAYMENT_DONE", "EMAIL")]
    assert (sms["status"], sms["last_error"]) == ("SKIPPED", "no phone number")
    assert (email["status"], email["last_error"]) == ("PENDING", None)
    assert store.wakes == 1  # the email waits for the deliverer


async def test_a_user_with_both_addresses_or_no_contact_yet_has_both_channels_pending(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    store.contact_rows["u1"] = {"email": "ann@example.com", "phone": "+15550100", "name": "Ann"}
    assert await notify(store, uow, saga_event(ev.PAYMENT_DONE))
    assert await notify(store, uow, saga_event(ev.PAYMENT_DONE, user_id="u2", order_id="o2"))  # no contact yet
    assert {r["status"] for r in store.rows.values()} == {"PENDING"} and len(store.rows) == 4


async def test_nothing_left_to_deliver_does_not_wake_the_deliverer(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    store.contact_rows["u1"] = {"email": None, "phone": None, "name": "Ann"}
    assert await notify(store, uow, saga_event(ev.PAYMENT_DONE))
    assert {r["status"] for r in store.rows.values()} == {"SKIPPED"} and store.wakes == 0


async def test_a_poll_s_contacts_are_read_in_one_lookup_and_used_by_each_event(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    store.contact_rows["u1"] = {"email": "ann@example.com", "phone": None, "name": "Ann"}
    hs = NotificationHandlers(store.of, added=store.wake, contacts=store.contacts)
    events = [
        saga_event(ev.PAYMENT_DONE),
        saga_event(ev.INVENTORY_RESERVED),
        saga_event(ev.PAYMENT_DONE, user_id="u2", order_id="o2"),  # no contact yet
        saga_event(ev.PAYMENT_DONE, user_id=None, order_id="o3"),  # names no user: not looked up
    ]
    prepared = await hs.prepare(events)
    assert store.lookups == [["u1", "u2"]]
    assert prepared == {
        events[0].eventId: Looked(Contact("ann@example.com", None)),
        events[1].eventId: Looked(Contact("ann@example.com", None)),
        events[2].eventId: Looked(None),
    }
    store.contact_rows["u2"] = {"email": "bob@example.com", "phone": None, "name": "Bob"}  # came meanwhile
    for e in events:
        await deliver(NOTIFICATION_SVC, hs.on_order_topic(), e, uow, prepared=prepared.get(e.eventId))
    assert store.lookups == [["u1", "u2"]]  # nothing read one by one
    status = {(o, k, ch): r["status"] for (o, k, ch), r in store.rows.items()}
    assert status[("o1", "PAYMENT_DONE", "SMS")] == status[("o1", "ORDER_PLACED", "SMS")] == "SKIPPED"
    assert status[("o2", "PAYMENT_DONE", "SMS")] == "PENDING"  # as looked up: left to the deliverer


async def test_a_batch_s_notifications_are_added_by_one_call_before_its_commit(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    """ADR 70: each event of a batch asks for its notification, and one call adds them all, in order,
    as its transaction commits: a placement after the cancel in the same batch is not told; the
    deliverer is woken once."""
    events = [
        saga_event(ev.PAYMENT_DONE),
        saga_event(ev.ORDER_CANCEL_REQUESTED, orderStatus="CANCELING"),
        saga_event(ev.INVENTORY_RESERVED),  # after the cancel: not told
        saga_event(ev.REFUND_INITIATED),  # tells the user nothing
        saga_event(ev.PAYMENT_DONE, order_id="o2"),
    ]
    await deliver_batch(NOTIFICATION_SVC, order_handlers(store), events, uow)
    assert store.adds == [4]  # the placement asked too, and the add left it out
    assert {(o, k) for o, k, _ in store.rows} == {
        ("o1", "PAYMENT_DONE"),
        ("o1", "ORDER_CANCELING"),
        ("o2", "PAYMENT_DONE"),
    }
    assert store.wakes == 1 and uow.commits == 1 and {e.eventId for e in events} <= uow.handled


async def test_a_batch_that_fails_adds_nothing(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    async def failing(wanted: Sequence[Wanted]) -> bool:
        raise RuntimeError("the insert failed")

    store.add_notifications = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await deliver_batch(NOTIFICATION_SVC, order_handlers(store), [saga_event(ev.PAYMENT_DONE)], uow)
    assert not store.rows and store.wakes == 0 and uow.commits == 0


async def test_an_event_not_prepared_reads_its_user_s_contact_itself(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    store.contact_rows["u1"] = {"email": "ann@example.com", "phone": None, "name": "Ann"}
    assert await notify(store, uow, saga_event(ev.PAYMENT_DONE))
    assert store.lookups == [["u1"]]
    assert store.rows[("o1", "PAYMENT_DONE", "SMS")]["status"] == "SKIPPED"
    assert await NotificationHandlers(store.of).prepare([saga_event(ev.PAYMENT_DONE)]) == {}  # no lookup to do it


async def test_each_type_of_an_order_is_its_own_pair(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    for name in (ev.PAYMENT_DONE, ev.INVENTORY_INSUFFICIENT, ev.REFUND_DONE, ev.ORDER_TIMED_OUT):
        assert await notify(store, uow, saga_event(name))
    kinds = {k for (_, k, _) in store.rows}
    assert kinds == {"PAYMENT_DONE", "INVENTORY_INSUFFICIENT", "REFUND_DONE", "ORDER_TIMED_OUT"}
    assert len(store.rows) == 8


async def test_each_change_of_the_order_is_told_once_per_channel(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    changes = {
        ev.ORDER_CANCEL_REQUESTED: "ORDER_CANCELING",
        ev.ORDER_CANCELED: "ORDER_CANCELED",
        ev.ORDER_SHIPPED: "ORDER_SHIPPED",
        ev.ORDER_DELIVERED: "ORDER_DELIVERED",
    }
    for name in changes:
        e = saga_event(name, orderStatus=name)
        assert await notify(store, uow, e)
        assert not await notify(store, uow, e)  # redelivered
        assert await notify(store, uow, e.model_copy(update={"eventId": uuid.uuid4()}))  # published again
    assert set(store.rows) == {("o1", kind, ch) for kind in changes.values() for ch in ("EMAIL", "SMS")}
    assert store.wakes == 4 and not uow.published
    assert "We are canceling your order o1" in store.rows[("o1", "ORDER_CANCELING", "SMS")]["message"]
    assert "Your order o1 is canceled" in store.rows[("o1", "ORDER_CANCELED", "EMAIL")]["message"]


async def test_a_reservation_that_lands_after_the_cancel_is_not_announced(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    """Canceled at PAYMENT_DONE while Inventory was down: its late INVENTORY_RESERVED is given back at
    once and the order is never placed, so the user is not told it is."""
    assert await notify(store, uow, saga_event(ev.ORDER_CANCEL_REQUESTED, orderStatus="CANCELING"))
    assert await notify(store, uow, saga_event(ev.INVENTORY_RESERVED))  # handled, and nothing added
    assert {k for (_, k, _) in store.rows} == {"ORDER_CANCELING"}
    other = saga_event(ev.INVENTORY_RESERVED, orderId="o2")  # another order is placed as usual
    assert await notify(store, uow, other)
    assert ("o2", "ORDER_PLACED", "EMAIL") in store.rows


async def test_a_cancel_s_answers_to_order_are_not_notify_s(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    for name in (ev.PAYMENT_VOIDED, ev.INVENTORY_RELEASED):
        assert not await notify(store, uow, saga_event(name))
    assert not store.rows and not uow.handled


async def test_the_seed_alias_notifies_as_the_canonical_name(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    assert await notify(store, uow, saga_event(ev.INVENTORY_RESERVED_SEED_ALIAS))
    assert {k for (_, k, _) in store.rows} == {"ORDER_PLACED"}


async def test_a_redelivered_event_adds_nothing(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    e = saga_event(ev.PAYMENT_DONE)
    assert await notify(store, uow, e)
    assert not await notify(store, uow, e)
    assert len(store.rows) == 2 and store.wakes == 1


async def test_the_same_order_and_type_under_a_new_event_id_adds_nothing(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    e = saga_event(ev.PAYMENT_DONE)
    retry = e.model_copy(update={"eventId": uuid.uuid4()})
    assert await notify(store, uow, e)
    assert await notify(store, uow, retry)
    assert retry.eventId in uow.handled
    assert len(store.rows) == 2 and store.wakes == 1


async def test_an_event_naming_another_user_for_the_same_order_and_type_adds_nothing(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    assert await notify(store, uow, saga_event(ev.PAYMENT_DONE))
    assert await notify(store, uow, saga_event(ev.PAYMENT_DONE, user_id="mallory"))
    assert len(store.rows) == 2 and {r["user_id"] for r in store.rows.values()} == {"u1"}


async def test_an_event_that_tells_the_user_nothing_adds_nothing(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    e = saga_event(ev.REFUND_INITIATED)  # handled by the step, but says nothing to the user
    assert await notify(store, uow, e)
    assert not store.rows and e.eventId in uow.handled


async def test_an_event_without_its_order_or_user_adds_nothing_and_is_not_retried(
    store: FakeNotifications, uow: FakeUnitOfWork
) -> None:
    for e in (saga_event(ev.PAYMENT_DONE, user_id=None), saga_event(ev.PAYMENT_DONE, order_id="")):
        assert await notify(store, uow, e)  # recorded as handled: nothing to tell
        assert e.eventId in uow.handled
    assert not store.rows


async def test_notify_does_not_take_events_of_other_steps(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    initiated = saga_event(ev.ORDER_INITIATED, paymentType="WALLET", price=Decimal("3.00"))
    assert not await notify(store, uow, initiated)
    assert not store.rows and not uow.handled


# ---- remember_contact ----------------------------------------------------------------------------


async def remember(store: FakeNotifications, uow: FakeUnitOfWork, event: ev.Event) -> bool:
    return await deliver(NOTIFICATION_SVC, user_handlers(store), event, uow, topic=saga.USER_TOPIC)


async def test_remember_contact_keeps_the_latest(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    assert await remember(store, uow, registered())
    assert store.contact_rows["u1"] == {"email": "ann@example.com", "phone": "+15550100", "name": "Ann"}
    assert await remember(store, uow, registered(email="ann@new.example", phone=None))
    assert store.contact_rows["u1"] == {"email": "ann@new.example", "phone": None, "name": "Ann"}
    assert len(store.contact_rows) == 1


async def test_a_redelivered_registration_is_skipped(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    e = registered()
    assert await remember(store, uow, e)
    store.contact_rows.clear()
    assert not await remember(store, uow, e)
    assert not store.contact_rows


async def test_a_registration_without_a_user_is_refused(store: FakeNotifications, uow: FakeUnitOfWork) -> None:
    with pytest.raises(ValueError, match="userId"):
        await remember(store, uow, registered(user_id=None))
    assert not store.contact_rows and not uow.handled


def test_each_topic_has_its_step() -> None:
    hs = NotificationHandlers(FakeNotifications().of)
    saga.check_handlers(NOTIFICATION_SVC, saga.ORDER_TOPIC, hs.on_order_topic())
    saga.check_handlers(NOTIFICATION_SVC, saga.USER_TOPIC, hs.on_user_topic())


# ---- the deliverer's decision --------------------------------------------------------------------


def test_a_known_address_is_sent_to() -> None:
    assert delivery_for("EMAIL", True, "a@x.io", None, 0) == Delivery(Action.SEND, "a@x.io")
    assert delivery_for("SMS", True, None, "+1555", 3) == Delivery(Action.SEND, "+1555")


def test_without_a_contact_it_waits_then_gives_up() -> None:
    for attempts in range(CONTACT_WAITS):
        assert delivery_for("EMAIL", False, None, None, attempts) == Delivery(Action.RETRY, reason="no contact yet")
    assert delivery_for("SMS", False, None, None, CONTACT_WAITS) == Delivery(Action.SKIP, reason="no contact")


def test_a_known_user_without_that_address_is_skipped_at_once() -> None:
    assert delivery_for("SMS", True, "a@x.io", None, 0) == Delivery(Action.SKIP, reason="no phone number")
    assert delivery_for("EMAIL", True, "", "+1555", 0) == Delivery(Action.SKIP, reason="no email address")


def test_what_is_skipped_as_it_is_added_is_what_the_deliverer_would_skip() -> None:
    assert skipped_when_added(None) == {}  # the contact may still come: the deliverer waits for it
    assert skipped_when_added(Contact("a@x.io", "+1555")) == {}
    assert skipped_when_added(Contact("a@x.io", None)) == {"SMS": "no phone number"}
    assert skipped_when_added(Contact(None, "")) == {"EMAIL": "no email address", "SMS": "no phone number"}
    for contact in (Contact("a@x.io", None), Contact(None, "+1555")):
        for channel, why in skipped_when_added(contact).items():
            assert delivery_for(channel, True, *contact, attempts=0) == Delivery(Action.SKIP, reason=why)


def test_the_retry_pause_is_the_old_schedule() -> None:
    for attempts in range(12):
        assert retry_pause(attempts) == min(60.0, 0.5 * 2**attempts) == pause(NOTIFICATION, attempts + 1)


def test_the_subject_names_the_type() -> None:
    assert subject_for("ORDER_TIMED_OUT") == "Tiny-Saga: order timed out"


# ---- a delivery round ----------------------------------------------------------------------------


@dataclass
class FakeDue:
    """The deliverer's side of `NotificationRepository`: due rows (dicts like the query's records),
    and what the round marked."""

    due: list[dict[str, Any]]
    db: object = "conn"
    sent: list[object] = field(default_factory=list)
    skipped: list[tuple[object, str]] = field(default_factory=list)
    retried: list[tuple[object, str, float]] = field(default_factory=list)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeDue]:
        yield self

    async def lock_due(self, limit: int) -> list[dict[str, Any]]:
        """The due rows, at most `limit`."""
        return self.due[:limit]

    async def mark_sent(self, ids: list[object]) -> None:
        self.sent += ids

    async def mark_skipped(self, skipped: list[tuple[object, str]]) -> None:
        self.skipped += skipped

    async def retry_later(self, notification_id: object, error: str, pause_seconds: float) -> None:
        self.retried.append((notification_id, error[:500], pause_seconds))

    async def seconds_to_next_due(self) -> float | None:
        """The earliest pause of a retry marked (no clock: the fake's rows are all due now)."""
        return min((p for _, _, p in self.retried), default=None)


@dataclass
class FakeChannel:
    """An email or SMS channel: what it sent, and the error it raises for an address."""

    fails: dict[str, Exception] = field(default_factory=dict)
    sent: list[tuple[Any, ...]] = field(default_factory=list)

    async def send(self, *args: Any) -> None:
        to = args[-3] if len(args) == 4 else args[0]
        if to in self.fails:
            raise self.fails[to]
        self.sent.append(args)

    async def close(self) -> None:
        pass


def due(
    n: int, channel: str, *, known: bool = True, email: str | None = None, phone: str | None = None, attempts: int = 0
) -> dict[str, Any]:
    return {
        "notification_id": n,
        "channel": channel,
        "type": "PAYMENT_DONE",
        "message": f"message {n}",
        "known": known,
        "email": email,
        "phone": phone,
        "attempts": attempts,
    }


async def test_a_round_sends_retries_and_skips_each_row_on_its_own() -> None:
    repo = FakeDue(
        [
            due(1, "EMAIL", email="ann@example.com"),
            due(2, "SMS", phone="+1555"),
            due(3, "EMAIL", email="down@example.com", attempts=2),
            due(4, "EMAIL", email="bad@example.com"),
            due(5, "SMS", known=False, attempts=1),
            due(6, "SMS", email="ann@example.com"),
        ]
    )
    email = FakeChannel({"down@example.com": ChannelDown("smtp: refused"), "bad@example.com": Undeliverable("no")})
    sms = FakeChannel()
    d = Deliverer(repo, email, sms)  # type: ignore[arg-type]
    assert await d.deliver_due() == (6, 1.0)  # six rows looked at; the first retry is due in 1 s
    assert email.sent == [("ann@example.com", "Tiny-Saga: payment done", "message 1")]
    assert sms.sent == [("conn", 2, "+1555", "message 2")]
    assert repo.sent == [1, 2]
    assert repo.skipped == [(4, "no"), (6, "no phone number")]
    assert repo.retried == [(3, "smtp: refused", 2.0), (5, "no contact yet", 1.0)]


async def test_the_deliverer_runs_one_round_for_the_wakes_of_its_gathering() -> None:
    """Woken by the handlers once their notifications are committed (no NOTIFY, ADR 53), it does
    not wait for its idle look: it gathers for a moment, and the wakes meanwhile (an order's
    payment, then its placement) make one round."""
    rounds: list[float] = []

    class Counting(FakeDue):
        async def lock_due(self, limit: int) -> list[dict[str, Any]]:
            rounds.append(asyncio.get_running_loop().time())
            return []

    d = Deliverer(Counting([]), FakeChannel(), FakeChannel())  # type: ignore[arg-type]
    task = asyncio.create_task(d.notification_deliverer())
    try:
        while not rounds:
            await asyncio.sleep(0.01)
        woken = asyncio.get_running_loop().time()
        d.wake()
        await asyncio.sleep(d.GATHER / 2)
        d.wake()
        while len(rounds) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(d.GATHER * 3)
        assert len(rounds) == 2, "two wakes while gathering made more than one round"
        assert d.GATHER <= rounds[1] - woken < 1.0 < d.IDLE_LOOK
    finally:
        task.cancel()
