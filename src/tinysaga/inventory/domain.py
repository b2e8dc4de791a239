"""Inventory rules, pure: the reservation statuses, and the rules that reserving and releasing
follow (the repository's conditional UPDATE enforces the first atomically, ADR 1)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from tinysaga.contracts import events as ev
from tinysaga.contracts.records import DONE, FAILED, Record

MAX_STOCK = 1_000_000
INVENTORY_NOT_AVAILABLE = "INVENTORY NOT AVAILABLE"


class Status(StrEnum):
    """A reservation row: one per order that reached inventory."""

    RESERVED = "RESERVED"  # the stock was taken
    REJECTED = "REJECTED"  # not enough stock: nothing taken
    RELEASED = "RELEASED"  # compensated after a timeout or a cancel: the stock was given back
    CANCELLED = "CANCELLED"  # the timeout or cancel came first: a late payment is not reserved


RESERVED, REJECTED, RELEASED, CANCELLED = Status.RESERVED, Status.REJECTED, Status.RELEASED, Status.CANCELLED


class Reserve(StrEnum):
    """What a PAYMENT_DONE does."""

    RESERVE = "RESERVE"  # take the quantity from the stock; the order's row is RESERVED
    REJECT = "REJECT"  # take nothing; the order's row is REJECTED
    ALREADY = "ALREADY"  # the order has a row (of any status): nothing to do, nothing to answer


def reserve(available: int, quantity: int, prior: Status | str | None) -> Reserve:
    """The reservation rule, the rule the conditional UPDATE enforces atomically (ADR 1:
    `available_count >= quantity` in the statement that takes it): an order gets at most one
    reservation row, and stock is taken only when it covers the whole quantity, so it never goes
    below zero."""
    if prior is not None:
        return Reserve.ALREADY
    return Reserve.RESERVE if available >= quantity else Reserve.REJECT


class Release(StrEnum):
    """What an ORDER_TIMED_OUT or ORDER_CANCEL_REQUESTED (that Order confirms) does to the order's
    reservation."""

    RELEASE = "RELEASE"  # give the stock back; the row becomes RELEASED
    CANCEL = "CANCEL"  # no row yet: write a CANCELLED one, so a late PAYMENT_DONE reserves nothing
    NOTHING = "NOTHING"  # rejected, released or cancelled already: nothing was taken, or it is back


def release(prior: Status | str | None) -> Release:
    """The compensation of a timeout or a cancel, by the order's reservation status (None: no row)."""
    if prior is None:
        return Release.CANCEL
    return Release.RELEASE if prior == RESERVED else Release.NOTHING


def release_answer(trigger: str, decision: Release) -> str | None:
    """The event staged with a release: INVENTORY_RELEASED for a cancel whose release changed the
    row (given back, or blocked), so that Order knows the stock side is settled; nothing for a
    timeout, nor when nothing changed (a rejected order's INVENTORY_INSUFFICIENT settled it, a
    repeated cancel was answered already)."""
    if trigger == ev.ORDER_CANCEL_REQUESTED and decision is not Release.NOTHING:
        return ev.INVENTORY_RELEASED
    return None


# ---- what Inventory did for an order (the saga map) -----------------------------------------------


def records(
    status: Status | str, product_id: str, quantity: int, created_at: datetime, updated_at: datetime
) -> list[Record]:
    """What Inventory did for the order, told from its reservation row: the reservation (or its
    refusal) when the row was written, and the release when it was given back; or the release that
    came first and blocks a late reservation."""
    items = f"{quantity} × {product_id}"
    if status == RESERVED:
        return [Record("reserve", f"reserved {items}", created_at)]
    if status == REJECTED:
        return [Record("reserve", f"not enough stock for {items}: nothing taken", created_at, FAILED)]
    if status == RELEASED:
        return [
            Record("reserve", f"reserved {items}", created_at),
            Record("release", f"gave {items} back to the stock", updated_at),
        ]
    return [Record("release", f"nothing was reserved: a late reservation of {items} is refused", created_at, DONE)]
