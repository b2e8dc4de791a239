"""Which events notify the user, what they say, and what the deliverer does with one. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from tinysaga.contracts import events as ev
from tinysaga.contracts.records import DONE, PENDING, Record

# A notification not sent once the order has one of the type given: a reservation that lands after
# the owner canceled is given back at once, and the order is never placed (ADR 13).
SUPERSEDED_BY = {"ORDER_PLACED": "ORDER_CANCELING"}


def notification_for(event: ev.Event) -> tuple[str, str] | None:
    """(type, message) for a notifiable event, else None."""
    amount = (
        f"{event.totalAmount:.2f} {event.currency}"
        if event.totalAmount is not None and event.currency
        else "the amount"
    )
    order = f"order {event.orderId}"
    name = event.name_canonical
    if name == ev.PAYMENT_DONE:
        return "PAYMENT_DONE", f"We took {amount} from your wallet for {order}."
    if name == ev.PAYMENT_FAIL:
        why = (
            "there is not enough money in your wallet"
            if event.failReason == ev.INSUFFICIENT_FUND
            else "the payment service had a problem"
        )
        return "PAYMENT_FAILED", f"Payment for {order} failed: {why}. Nothing was charged."
    if name == ev.INVENTORY_RESERVED:
        return "ORDER_PLACED", f"Your {order} is placed: {event.productQuantity} x {event.productId}."
    if name == ev.INVENTORY_INSUFFICIENT:
        return (
            "INVENTORY_INSUFFICIENT",
            f"Sorry, {event.productId} ran out of stock for {order}. A refund of {amount} is on its way.",
        )
    if name == ev.REFUND_DONE:
        return "REFUND_DONE", f"We refunded {amount} to your wallet for {order}."
    if name == ev.REFUND_FAILED:
        return "REFUND_FAILED", f"The refund for {order} failed. Our team has been alerted and will fix it."
    if name == ev.ORDER_TIMED_OUT:
        return "ORDER_TIMED_OUT", f"Your {order} could not be completed in time; any payment will be refunded."
    # the order's changes after it is placed or canceled (ADR 13); PAYMENT_VOIDED and
    # INVENTORY_RELEASED are answers to Order, not news: the refund is told by its REFUND_DONE
    if name == ev.ORDER_CANCEL_REQUESTED:
        return "ORDER_CANCELING", f"We are canceling your {order}; any payment will be refunded."
    if name == ev.ORDER_CANCELED:
        return "ORDER_CANCELED", f"Your {order} is canceled."
    if name == ev.ORDER_SHIPPED:
        return "ORDER_SHIPPED", f"Your {order} is on the way: {event.productQuantity} x {event.productId}."
    if name == ev.ORDER_DELIVERED:
        return "ORDER_DELIVERED", f"Your {order} was delivered."
    return None


# ---- delivery --------------------------------------------------------------------------------

EMAIL, SMS = "EMAIL", "SMS"
CHANNELS = (EMAIL, SMS)
CONTACT_WAITS = 10  # attempts a notification waits for its user's contact before it is skipped


class Contact(NamedTuple):
    """A user's addresses, as USER_REGISTERED told them (either may be missing)."""

    email: str | None
    phone: str | None


class Wanted(NamedTuple):
    """The notification an event asks for: both channels' rows of (order, type), unless the order
    has a notification of type `unless` by then (`SUPERSEDED_BY`); a channel in `skipped` is added
    as SKIPPED, with its reason (`skipped_when_added`)."""

    user_id: str
    order_id: str
    kind: str
    message: str
    unless: str | None
    skipped: Mapping[str, str]


class Action(StrEnum):
    SEND = "SEND"
    RETRY = "RETRY"  # later, with backoff
    SKIP = "SKIP"  # never: nothing to send to


@dataclass(frozen=True)
class Delivery:
    """What the deliverer does with a due notification: send it to `to`, retry it later, or skip it
    (`reason` for the last two)."""

    action: Action
    to: str | None = None
    reason: str = ""


def delivery_for(channel: str, known: bool, email: str | None, phone: str | None, attempts: int) -> Delivery:
    """A due notification on `channel`, for a user whose contact is `known` (with that email and
    phone), tried `attempts` times already. The contact comes on another topic and may not be here
    yet; once it is, a missing address (a user without a phone number) means nothing to send."""
    to = email if channel == EMAIL else phone
    if to:
        return Delivery(Action.SEND, to)
    if not known and attempts < CONTACT_WAITS:
        return Delivery(Action.RETRY, reason="no contact yet")
    missing = "email address" if channel == EMAIL else "phone number"
    return Delivery(Action.SKIP, reason=f"no {missing}" if known else "no contact")


def skipped_when_added(contact: Contact | None) -> dict[str, str]:
    """The channels whose notification is recorded as skipped as it is added, with why: a user whose
    contact is here without an address on a channel (no phone number) has nothing it could ever be
    sent to there, so it is not queued for the deliverer (ADR 63). Without a contact yet, none."""
    skipped: dict[str, str] = {}
    email, phone = contact or (None, None)
    for channel in CHANNELS:
        plan = delivery_for(channel, contact is not None, email, phone, attempts=0)
        if plan.action is Action.SKIP:
            skipped[channel] = plan.reason
    return skipped


def subject_for(kind: str) -> str:
    """The email subject of a notification of type `kind`."""
    return f"Tiny-Saga: {kind.replace('_', ' ').lower()}"


# ---- what Notification did for an order (the saga map) --------------------------------------------


def record_of(
    kind: str,
    channel: str,
    status: str,
    message: str,
    created_at: datetime,
    sent_at: datetime | None,
    last_error: str | None,
) -> Record:
    """One notification of the order (it is in the user's inbox from the start), and what became of
    its email or SMS: sent, waiting to be sent, or skipped (nothing to send it to)."""
    medium = "email" if channel == EMAIL else "SMS"
    if status == "SENT":
        return Record("notify", f"{kind}: {medium} sent", sent_at or created_at, DONE, message)
    if status == "SKIPPED":
        return Record("notify", f"{kind}: {medium} not sent ({last_error or 'no address'})", created_at, DONE, message)
    return Record("notify", f"{kind}: {medium} waiting to be sent", created_at, PENDING, message)
