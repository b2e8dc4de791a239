"""The order state machine, pure. Every allowed transition is a row of `TRANSITIONS`; anything else
(a stale, duplicate or out-of-order event) leaves the order as it is. Its inputs are event names:
the saga's outcomes, and ORDER_TIMED_OUT, which the sweeper applies when the deadline passes (and
then publishes). Below it, the order's other rules: its price, stock, deadline, live stream."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from tinysaga.contracts import events as ev


class Status(StrEnum):
    INITIATED = "INITIATED"
    PAYMENT_DONE = "PAYMENT_DONE"
    PLACED = "PLACED"
    REFUND_INITIATED = "REFUND_INITIATED"
    FAILED = "FAILED"


class FailReason(StrEnum):
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    PAYMENT_ERROR = "PAYMENT_ERROR"
    INVENTORY_INSUFFICIENT = "INVENTORY_INSUFFICIENT"
    TIMEOUT = "TIMEOUT"


class Refund(StrEnum):
    REFUND_INITIATED = "REFUND_INITIATED"
    REFUND_DONE = "REFUND_DONE"
    REFUND_FAILED = "REFUND_FAILED"


TERMINAL = frozenset({Status.PLACED, Status.FAILED})
IN_FLIGHT = (Status.INITIATED, Status.PAYMENT_DONE, Status.REFUND_INITIATED)

NEW_ORDER_INFO = "order received; taking payment"
CENT = Decimal("0.01")


@dataclass(frozen=True)
class OrderState:
    status: Status
    fail_reason: FailReason | None = None
    refund_status: Refund | None = None
    status_info: str = ""
    transaction_id: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Input:
    """What the state machine needs of an event."""

    name: str
    fail_reason: str | None = None  # the wire value of PAYMENT_FAIL / REFUND_FAILED
    transaction_id: str | None = None


S = Status
_BEFORE_INVENTORY = (S.INITIATED, S.PAYMENT_DONE)
_REFUNDABLE = (S.INITIATED, S.PAYMENT_DONE, S.REFUND_INITIATED, S.FAILED)

# (event, from) -> to. Inventory events are accepted straight from INITIATED because Inventory only
# acts after PAYMENT_DONE, which Order may see later (different producers, no ordering between them).
TRANSITIONS: dict[tuple[str, Status], Status] = {
    (ev.PAYMENT_DONE, S.INITIATED): S.PAYMENT_DONE,
    (ev.PAYMENT_FAIL, S.INITIATED): S.FAILED,
    **{(ev.INVENTORY_RESERVED, s): S.PLACED for s in _BEFORE_INVENTORY},
    **{(ev.INVENTORY_INSUFFICIENT, s): S.REFUND_INITIATED for s in _BEFORE_INVENTORY},
    **{(ev.REFUND_INITIATED, s): S.REFUND_INITIATED for s in (S.INITIATED, S.PAYMENT_DONE)},
    (ev.REFUND_INITIATED, S.FAILED): S.FAILED,  # refund of a timed-out order: annotation only
    **{(ev.REFUND_DONE, s): S.FAILED for s in _REFUNDABLE},
    **{(ev.REFUND_FAILED, s): S.FAILED for s in _REFUNDABLE},
    **{(ev.ORDER_TIMED_OUT, s): S.FAILED for s in IN_FLIGHT},  # the sweeper, past the deadline
}

# A refund status only moves forward (REFUND_FAILED -> REFUND_DONE is an operator's retry succeeding).
_REFUND_ORDER = {None: 0, Refund.REFUND_INITIATED: 1, Refund.REFUND_FAILED: 2, Refund.REFUND_DONE: 3}


def _payment_fail_reason(wire: str | None) -> FailReason:
    return FailReason.INSUFFICIENT_FUNDS if wire == ev.INSUFFICIENT_FUND else FailReason.PAYMENT_ERROR


def apply(state: OrderState, inp: Input) -> OrderState | None:
    """The order after `inp`, or None when `inp` does not apply (stale, duplicate, out of order)."""
    name = ev.ALIASES.get(inp.name, inp.name)
    to = TRANSITIONS.get((name, state.status))
    if to is None:
        return None
    new = replace(state, status=to)
    if inp.transaction_id and not state.transaction_id:
        new = replace(new, transaction_id=inp.transaction_id)

    if name == ev.PAYMENT_DONE:
        return replace(new, status_info="payment taken from the wallet; reserving stock")
    if name == ev.PAYMENT_FAIL:
        reason = _payment_fail_reason(inp.fail_reason)
        info = (
            "payment refused: not enough money in the wallet"
            if reason == FailReason.INSUFFICIENT_FUNDS
            else "payment failed: the wallet could not be reached"
        )
        return replace(new, fail_reason=reason, status_info=info)
    if name == ev.INVENTORY_RESERVED:
        return replace(new, status_info="stock reserved; the order is placed")
    if name == ev.INVENTORY_INSUFFICIENT:
        return replace(
            new,
            fail_reason=FailReason.INVENTORY_INSUFFICIENT,
            refund_status=Refund.REFUND_INITIATED,
            status_info="out of stock after payment; refund initiated",
        )
    if name in (ev.REFUND_INITIATED, ev.REFUND_DONE, ev.REFUND_FAILED):
        refund = {
            ev.REFUND_INITIATED: Refund.REFUND_INITIATED,
            ev.REFUND_DONE: Refund.REFUND_DONE,
            ev.REFUND_FAILED: Refund.REFUND_FAILED,
        }[name]
        if _REFUND_ORDER[refund] <= _REFUND_ORDER[state.refund_status]:
            return None
        reason = state.fail_reason or FailReason.INVENTORY_INSUFFICIENT
        info = {
            Refund.REFUND_INITIATED: "refund initiated",
            Refund.REFUND_DONE: "the payment was refunded to the wallet",
            Refund.REFUND_FAILED: "the refund FAILED: an operator must act",
        }[refund]
        cause = {
            FailReason.INVENTORY_INSUFFICIENT: "out of stock",
            FailReason.TIMEOUT: "timed out",
            FailReason.PAYMENT_ERROR: "payment failed",
            FailReason.INSUFFICIENT_FUNDS: "payment refused",
        }[reason]
        return replace(new, fail_reason=reason, refund_status=refund, status_info=f"{cause}; {info}")
    if name == ev.ORDER_TIMED_OUT:
        return replace(
            new,
            fail_reason=state.fail_reason or FailReason.TIMEOUT,
            status_info="the saga did not finish in time; compensating",
        )
    raise AssertionError(f"transition without effect: {name}")  # pragma: no cover


# ---- the rest of an order's rules ----------------------------------------------------------------


@dataclass(frozen=True)
class NewOrder:
    """An order as it is created: INITIATED, priced, with its deadline."""

    order_id: uuid.UUID
    user_id: str
    product_id: str
    quantity: int
    price: Decimal
    total: Decimal
    currency: str
    payment_type: str
    deadline: datetime
    idempotency_key: str | None = None
    request_hash: str | None = None
    status_info: str = NEW_ORDER_INFO


class OutOfStock(Exception):
    """Fewer in stock than ordered: no order is created."""

    def __init__(self, product_id: str, available: int) -> None:
        super().__init__(f"only {available} of {product_id!r} in stock")
        self.product_id, self.available = product_id, available


def total(unit_price: Decimal, quantity: int) -> Decimal:
    """What an order of `quantity` costs, to the cent."""
    return (unit_price * quantity).quantize(CENT)


def in_stock(available: int, quantity: int) -> bool:
    return available >= quantity


def can_pay(balance: Decimal, amount: Decimal) -> bool:
    return balance >= amount


def deadline(now: datetime, timeout_seconds: float) -> datetime:
    """When a saga started at `now` counts as stuck and the sweeper times it out."""
    return now + timedelta(seconds=timeout_seconds)


def stream_done(status: str, refund_status: str | None) -> bool:
    """A live status stream ends when the order has ended and no refund is still on its way."""
    return status in TERMINAL and refund_status != Refund.REFUND_INITIATED


def needs_alert(state: OrderState) -> bool:
    """A failed refund: the user was charged for nothing and an operator must act."""
    return state.refund_status == Refund.REFUND_FAILED


def refund_failed_detail(total_amount: Decimal, currency: str) -> str:
    return f"refund of {total_amount} {currency} failed; the user was charged for nothing"
