"""The order state machine, pure. Every allowed transition is a row of `TRANSITIONS`; anything else
(a stale, duplicate or out-of-order event) leaves the order as it is. Its inputs are event names:
the saga's outcomes, the answers to a cancel (PAYMENT_VOIDED, INVENTORY_RELEASED), and
ORDER_TIMED_OUT, which the sweeper applies when the deadline passes (and then publishes). The
requests (cancel, ship, deliver) are rows of `REQUESTS`, decided by `decide` (ADR 13). Below them,
the order's other rules: its price, stock, deadline, live stream."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from tinysaga.contracts import events as ev
from tinysaga.contracts import saga


class Status(StrEnum):
    INITIATED = "INITIATED"
    PAYMENT_DONE = "PAYMENT_DONE"
    PLACED = "PLACED"
    REFUND_INITIATED = "REFUND_INITIATED"
    FAILED = "FAILED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    ON_THE_WAY = "ON_THE_WAY"
    DELIVERED = "DELIVERED"


class FailReason(StrEnum):
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    PAYMENT_ERROR = "PAYMENT_ERROR"
    INVENTORY_INSUFFICIENT = "INVENTORY_INSUFFICIENT"
    TIMEOUT = "TIMEOUT"


class Refund(StrEnum):
    REFUND_INITIATED = "REFUND_INITIATED"
    REFUND_DONE = "REFUND_DONE"
    REFUND_FAILED = "REFUND_FAILED"


# The saga ends in these (ON_THE_WAY and DELIVERED follow PLACED).
TERMINAL = frozenset({Status.PLACED, Status.FAILED, Status.CANCELED})
# What the sweeper times out. Not CANCELING: its compensations are already requested (ADR 13).
IN_FLIGHT = (Status.INITIATED, Status.PAYMENT_DONE, Status.REFUND_INITIATED)
# Where a live stream ends: no step is in flight for the order any more.
AT_REST = frozenset({*TERMINAL, Status.ON_THE_WAY, Status.DELIVERED})

NEW_ORDER_INFO = "order received; taking payment"
CENT = Decimal("0.01")


@dataclass(frozen=True)
class OrderState:
    status: Status
    fail_reason: FailReason | None = None
    refund_status: Refund | None = None
    status_info: str = ""
    transaction_id: str | None = None
    # while CANCELING: whether Payment and Inventory have settled their side of the cancel
    payment_settled: bool = False
    stock_settled: bool = False

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
# The answers that settle a side of a cancel: nothing is (or will be) charged or held any more.
PAYMENT_SIDE = (ev.PAYMENT_FAIL, ev.PAYMENT_VOIDED, ev.REFUND_DONE, ev.REFUND_FAILED)
STOCK_SIDE = (ev.INVENTORY_RELEASED, ev.INVENTORY_INSUFFICIENT)
# Outcomes that may land after a cancel without settling anything: recorded, the order stays CANCELING.
LATE = (ev.PAYMENT_DONE, ev.INVENTORY_RESERVED, ev.REFUND_INITIATED)
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
    # A cancel's bookkeeping (ADR 13): while CANCELING, each answer settles a side or is recorded
    # (a late debit or reservation, whose compensation is on its way); `apply` moves the order on
    # to CANCELED once both sides are settled.
    **{(name, S.CANCELING): S.CANCELING for name in (*PAYMENT_SIDE, *STOCK_SIDE, *LATE)},
    # a refund that lands after the cancel ended (an operator's retry): annotation only
    **{(name, S.CANCELED): S.CANCELED for name in (ev.REFUND_INITIATED, ev.REFUND_DONE, ev.REFUND_FAILED)},
}

# A refund status only moves forward (REFUND_FAILED -> REFUND_DONE is an operator's retry succeeding).
_REFUND_ORDER = {None: 0, Refund.REFUND_INITIATED: 1, Refund.REFUND_FAILED: 2, Refund.REFUND_DONE: 3}


def _payment_fail_reason(wire: str | None) -> FailReason:
    return FailReason.INSUFFICIENT_FUNDS if wire == ev.INSUFFICIENT_FUND else FailReason.PAYMENT_ERROR


_REFUND_OF = {
    ev.REFUND_INITIATED: Refund.REFUND_INITIATED,
    ev.REFUND_DONE: Refund.REFUND_DONE,
    ev.REFUND_FAILED: Refund.REFUND_FAILED,
}


def apply(state: OrderState, inp: Input) -> OrderState | None:
    """The order after `inp`, or None when `inp` does not apply (stale, duplicate, out of order)."""
    name = ev.ALIASES.get(inp.name, inp.name)
    to = TRANSITIONS.get((name, state.status))
    if to is None:
        return None
    if state.status in (S.CANCELING, S.CANCELED):
        return _after_cancel(state, name, inp)
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


_CANCELING_INFO = {
    ev.PAYMENT_DONE: "the payment went through as the order was canceled; it is being refunded",
    ev.INVENTORY_RESERVED: "the stock was reserved as the order was canceled; it is being given back",
    ev.REFUND_INITIATED: "canceling: refund initiated",
    ev.PAYMENT_FAIL: "canceling: nothing was charged",
    ev.PAYMENT_VOIDED: "canceling: nothing was charged",
    ev.REFUND_DONE: "canceling: the payment was refunded to the wallet",
    ev.REFUND_FAILED: "canceling: the refund FAILED: an operator must act",
    ev.INVENTORY_RELEASED: "canceling: no stock is held for the order any more",
    ev.INVENTORY_INSUFFICIENT: "canceling: no stock was reserved",
}


def canceled_info(refund: Refund | None) -> str:
    """What a CANCELED order tells its user, by its refund status."""
    return {
        None: "canceled: nothing was charged and no stock is held",
        Refund.REFUND_INITIATED: "canceled: refund initiated",
        Refund.REFUND_DONE: "canceled: the payment was refunded to the wallet and no stock is held",
        Refund.REFUND_FAILED: "canceled: the refund FAILED: an operator must act",
    }[refund]


def _after_cancel(state: OrderState, name: str, inp: Input) -> OrderState | None:
    """CANCELING: record what the answer says (a side settled, a transaction id, a refund status)
    and end CANCELED once both sides are settled. CANCELED: only a refund moving forward. None when
    nothing changes (a duplicate, or a late outcome on a side already settled)."""
    new = state
    if inp.transaction_id and not state.transaction_id:
        new = replace(new, transaction_id=inp.transaction_id)
    refund = _REFUND_OF.get(name)
    if refund is not None and _REFUND_ORDER[refund] > _REFUND_ORDER[state.refund_status]:
        new = replace(new, refund_status=refund)
    if state.status == S.CANCELED:
        if new.refund_status == state.refund_status:
            return None
        return replace(new, status_info=canceled_info(new.refund_status))
    new = replace(
        new,
        payment_settled=state.payment_settled or name in PAYMENT_SIDE,
        stock_settled=state.stock_settled or name in STOCK_SIDE,
    )
    if new.payment_settled and new.stock_settled:
        return replace(new, status=S.CANCELED, status_info=canceled_info(new.refund_status))
    if name in LATE:
        if not (state.stock_settled if name == ev.INVENTORY_RESERVED else state.payment_settled):
            new = replace(new, status_info=_CANCELING_INFO[name])  # recorded even without a new field
    elif new != state:
        new = replace(new, status_info=_CANCELING_INFO[name])
    return None if new == state else new


# ---- requests: cancel, ship, deliver (ADR 13) ----------------------------------------------------


class Request(StrEnum):
    """A request that moves an order; the values are the saga's step names."""

    CANCEL = "cancel_order"
    SHIP = "ship"
    DELIVER = "deliver"


class Decision(StrEnum):
    CANCEL = "CANCEL"  # the order becomes CANCELING (202)
    MOVE = "MOVE"  # ship or deliver: the order moves on (200)
    ALREADY = "ALREADY"  # the order is already there: answered as it is, nothing done
    REFUSED = "REFUSED"  # not from this status (409)


CANCELABLE = (S.INITIATED, S.PAYMENT_DONE, S.PLACED)

# (request, from) -> to
REQUESTS: dict[tuple[Request, Status], Status] = {
    **{(Request.CANCEL, s): S.CANCELING for s in CANCELABLE},
    (Request.SHIP, S.PLACED): S.ON_THE_WAY,
    (Request.DELIVER, S.ON_THE_WAY): S.DELIVERED,
}
# Where a repeat of the request finds the order: answered as it is.
ALREADY_THERE: dict[Request, frozenset[Status]] = {
    Request.CANCEL: frozenset({S.CANCELING, S.CANCELED}),
    Request.SHIP: frozenset({S.ON_THE_WAY}),
    Request.DELIVER: frozenset({S.DELIVERED}),
}
# The event each request publishes with its change (the saga definition's outcome of its step).
ANNOUNCES: dict[Request, str] = {
    Request.CANCEL: ev.ORDER_CANCEL_REQUESTED,
    Request.SHIP: ev.ORDER_SHIPPED,
    Request.DELIVER: ev.ORDER_DELIVERED,
}
_REQUEST_INFO = {
    Request.CANCEL: "cancel requested: undoing the payment and the reservation",
    Request.SHIP: "shipped: the order is on the way",
    Request.DELIVER: "delivered",
}
# What Payment and Inventory may ask Order it really requested, before compensating.
ASKABLE = frozenset({ev.ORDER_TIMED_OUT, ev.ORDER_CANCEL_REQUESTED, ev.REFUND_RETRY_REQUESTED})


def decide(request: Request, status: Status) -> Decision:
    if (request, status) in REQUESTS:
        return Decision.CANCEL if request == Request.CANCEL else Decision.MOVE
    if status in ALREADY_THERE[request]:
        return Decision.ALREADY
    return Decision.REFUSED


def decide_cancel(status: Status) -> Decision:
    """CANCEL from INITIATED, PAYMENT_DONE, PLACED; ALREADY when CANCELING or CANCELED; else REFUSED."""
    return decide(Request.CANCEL, status)


def decide_ship(status: Status) -> Decision:
    return decide(Request.SHIP, status)


def decide_deliver(status: Status) -> Decision:
    return decide(Request.DELIVER, status)


def requested(state: OrderState, request: Request) -> OrderState:
    """The order once `request` is accepted (a cancel starts with neither side settled)."""
    to = REQUESTS.get((request, state.status))
    if to is None:
        raise ValueError(f"{request} is not allowed from {state.status}")
    return replace(state, status=to, status_info=_REQUEST_INFO[request], payment_settled=False, stock_settled=False)


def refusal(request: Request, status: Status) -> str:
    """Why `request` is refused from `status`, for the 409 answer."""
    if request == Request.CANCEL:
        why = {
            S.ON_THE_WAY: "it has been shipped",
            S.DELIVERED: "it has been delivered",
            S.FAILED: "it has failed",
            S.REFUND_INITIATED: "it has failed and is being refunded",
        }.get(status, "not from this status")
        return f"the order is {status}: it can no longer be canceled ({why})"
    need = {Request.SHIP: "a PLACED order can be shipped", Request.DELIVER: "an ON_THE_WAY order can be delivered"}
    return f"only {need[request]}; this one is {status}"


class UnknownOrder(LookupError):
    """No such order (or, for the owner's routes, someone else's)."""


class Refused(Exception):
    """The request is not allowed from the order's status."""

    def __init__(self, request: Request, status: Status) -> None:
        super().__init__(refusal(request, status))
        self.request, self.status = request, status


# ---- an operator's retry of a failed refund (issue 17) ------------------------------------------


class NothingToRetry(Exception):
    """Only an order whose refund failed has a refund to retry."""


RETRY_INFO = "the refund FAILED: an operator is retrying it"


def refund_retry(state: OrderState) -> OrderState:
    """The order once an operator asks for its failed refund again: its status and refund status
    stay (REFUND_DONE, when it comes, moves it on); it says so. NothingToRetry otherwise."""
    if state.refund_status != Refund.REFUND_FAILED:
        what = "has no refund" if state.refund_status is None else f"has its refund {state.refund_status}"
        raise NothingToRetry(f"only a refund that failed can be retried; this order {what}")
    return replace(state, status_info=RETRY_INFO)


# ---- dead letters (issue 17) --------------------------------------------------------------------

_EVENT_NAME = re.compile(r'"eventName"\s*:\s*"([A-Za-z_]{1,64})"')


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operator replays together (None: any)."""

    service: str | None = None
    event_name: str | None = None
    error_contains: str | None = None
    include_replayed: bool = False  # also those replayed before (each replay that fails again is a new letter)
    limit: int = 100


def dead_letter_event_name(payload: str, encoding: str) -> str | None:
    """The eventName a dead letter's original message carries, if it can be read (the same
    pattern the migration used for the letters kept before)."""
    if encoding != "utf-8":
        return None
    found = _EVENT_NAME.search(payload)
    return found.group(1) if found else None


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
    trace_id: str | None = None  # the trace of its creation, when traced (ADR 42)


class OutOfStock(Exception):
    """Fewer in stock than ordered: no order is created."""

    def __init__(self, product_id: str, available: int) -> None:
        super().__init__(f"only {available} of {product_id!r} in stock")
        self.product_id, self.available = product_id, available


@dataclass(frozen=True)
class InFlight:
    """The sagas in flight over every replica (orders accepted, not yet settled): how many, and how
    long ago the median one was accepted (seconds; 0 when none is)."""

    count: int
    median_age: float

    def expected_wait(self) -> float:
        """How long an order accepted now can expect to take, from the sagas in flight alone: they
        were accepted at a steady pace over the time one takes, so their median age is half of it
        (Little's law; robust to a few stuck sagas, which the mean is not)."""
        return 2 * self.median_age


class Overloaded(Exception):
    """No more sagas fit (ADR 50): as many in flight as the bound allows, or so many that a new one
    would take longer than the stack is allowed to make an order wait. No order is created; try
    again later."""

    def __init__(self, in_flight: int, bound: int, retry_after: int, wait: float | None = None) -> None:
        if wait is None:
            reason = f"{in_flight} orders are in progress, the most this shop takes at once is {bound}"
        else:
            reason = f"{in_flight} orders are in progress and a new one would take about {wait:.1f} s"
        super().__init__(reason)
        self.in_flight, self.bound, self.retry_after, self.wait = in_flight, bound, retry_after, wait

    @property
    def limit(self) -> str:
        """The limit that turned the order away: `bound` (ADR 50) or `wait` (ADR 52)."""
        return "bound" if self.wait is None else "wait"


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
    """A live status stream ends once no step is in flight for the order: after PLACED, FAILED,
    CANCELED, ON_THE_WAY or DELIVERED, with no refund still on its way. It stays open through
    CANCELING."""
    return status in AT_REST and refund_status != Refund.REFUND_INITIATED


def needs_alert(state: OrderState) -> bool:
    """A failed refund: the user was charged for nothing and an operator must act."""
    return state.refund_status == Refund.REFUND_FAILED


def refund_failed_detail(total_amount: Decimal, currency: str) -> str:
    return f"refund of {total_amount} {currency} failed; the user was charged for nothing"


# ---- stuck sagas (ADR 40) ------------------------------------------------------------------------

# The statuses a saga is still in flight in (the sweeper's, and a cancel waiting for its answers).
UNSETTLED = (*IN_FLIGHT, Status.CANCELING)
# A stuck saga is listed at the latest at this share of the saga timeout, so an operator sees it
# before the sweeper fails it.
STUCK_SHARE = 0.5


def declared_stays() -> dict[Status, float]:
    """How long an order may stay in a status, as the saga definition says (the `stay_seconds` of
    the step that leads to it)."""
    return {Status(s.leads_to): float(s.stay_seconds) for s in saga.STEPS if s.leads_to and s.stay_seconds}


def stuck_after(timeout_seconds: float, stays: Mapping[Status, float] | None = None) -> dict[Status, float]:
    """Seconds an order may stay in each unsettled status before it counts as stuck: the declared
    stays, all scaled down together when the longest is over STUCK_SHARE of the saga timeout; a
    status without a declared stay gets STUCK_SHARE of the timeout."""
    stays = declared_stays() if stays is None else stays
    ceiling = STUCK_SHARE * timeout_seconds
    scale = min(1.0, ceiling / max(stays.values())) if stays else 1.0
    return {s: stays[s] * scale if s in stays else ceiling for s in UNSETTLED}


def waiting_for(status: Status, last_event: str | None, payment_settled: bool, stock_settled: bool) -> list[str]:
    """The saga steps a stuck order waits for: a cancel's sides not yet settled (refund, release);
    otherwise the steps its last event starts (a tracking or notification step aside), or else the
    step that published it (a compensation still at work)."""
    if status == Status.CANCELING:
        return [name for name, settled in (("refund", payment_settled), ("release", stock_settled)) if not settled]
    if last_event is None:
        return []
    name = ev.ALIASES.get(last_event, last_event)
    started = [s.name for s in saga.STEPS if name in s.handled_events and s.kind not in ("tracking", "notification")]
    return started or [s.name for s in saga.producers_of(name)]


def awaited_steps(status: Status) -> list[str]:
    """The steps an order in an unsettled status waits for, from the saga definition and the state
    machine: what the events that bring an order into it start (a cancel: both its compensations)."""
    if status == Status.CANCELING:
        return waiting_for(status, None, False, False)
    entering = [name for (name, frm), to in TRANSITIONS.items() if to == status and frm != status]
    entering += [out for s in saga.STEPS if s.leads_to == status for out in s.outcomes]
    started = [
        s.name
        for s in saga.STEPS
        if s.kind not in ("tracking", "notification") and any(n in s.handled_events for n in entering)
    ]
    # none started: a compensation is still at work (REFUND_INITIATED: the refund)
    return started or list(dict.fromkeys(p.name for n in entering for p in saga.producers_of(n)))


# ---- the operations summary (issue 17) -----------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile of `values` by nearest rank (None for none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def saga_summary(ended: list[tuple[str, float]], window_seconds: float) -> dict[str, object]:
    """Throughput and latency of the sagas that ended in a window: (outcome, seconds) of each."""
    durations = [s for _, s in ended]
    by_outcome = {s.value: 0 for s in (Status.PLACED, Status.FAILED, Status.CANCELED)}
    for outcome, _ in ended:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    return {
        "windowSeconds": window_seconds,
        "ended": by_outcome,
        "sagasPerSecond": round(len(ended) / window_seconds, 3),
        "p50Seconds": percentile(durations, 0.5),
        "p99Seconds": percentile(durations, 0.99),
    }
