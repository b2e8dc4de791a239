"""The Kafka event envelope of SPEC section 3: JSON, camelCase, keyed by orderId."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_serializer

from tinysaga.contracts.ids import new_id

VERSION = "1.0"
MAX_EVENT_BYTES = 64 * 1024

ORDER_INITIATED = "ORDER_INITIATED"
PAYMENT_DONE = "PAYMENT_DONE"
PAYMENT_FAIL = "PAYMENT_FAIL"
INVENTORY_RESERVED = "INVENTORY_RESERVED"
INVENTORY_RESERVED_SEED_ALIAS = "INVENTORY_RESERVERVED"
INVENTORY_INSUFFICIENT = "INVENTORY_INSUFFICIENT"
REFUND_INITIATED = "REFUND_INITIATED"
REFUND_DONE = "REFUND_DONE"
REFUND_FAILED = "REFUND_FAILED"
ORDER_TIMED_OUT = "ORDER_TIMED_OUT"
USER_REGISTERED = "USER_REGISTERED"
# The order's life after the saga (ADR 13)
ORDER_CANCEL_REQUESTED = "ORDER_CANCEL_REQUESTED"
PAYMENT_VOIDED = "PAYMENT_VOIDED"
INVENTORY_RELEASED = "INVENTORY_RELEASED"
ORDER_CANCELED = "ORDER_CANCELED"
ORDER_SHIPPED = "ORDER_SHIPPED"
ORDER_DELIVERED = "ORDER_DELIVERED"
# An operator's action (issue 17)
REFUND_RETRY_REQUESTED = "REFUND_RETRY_REQUESTED"
# The orchestrator's commands (SPEC section 5, topic `saga-commands`): each asks a participant for
# one step of the saga, and carries the fields of the event that led to it (`cause`).
CHARGE_PAYMENT = "CHARGE_PAYMENT"
RESERVE_STOCK = "RESERVE_STOCK"
REFUND_PAYMENT = "REFUND_PAYMENT"
RELEASE_STOCK = "RELEASE_STOCK"
COMMANDS = (CHARGE_PAYMENT, RESERVE_STOCK, REFUND_PAYMENT, RELEASE_STOCK)

ALIASES = {INVENTORY_RESERVED_SEED_ALIAS: INVENTORY_RESERVED}

# What Payment and Inventory answer about a step of the saga: Order moves the order on them and
# Notification tells the user about them.
STEP_OUTCOMES = (
    PAYMENT_DONE,
    PAYMENT_FAIL,
    INVENTORY_RESERVED,
    INVENTORY_INSUFFICIENT,
    REFUND_INITIATED,
    REFUND_DONE,
    REFUND_FAILED,
)
# What Payment and Inventory answer to a cancel when they had nothing to undo (or once they undid
# it, for the stock): with the refund events, they tell Order that their side is settled.
CANCEL_OUTCOMES = (PAYMENT_VOIDED, INVENTORY_RELEASED)
# Order's own announcements of a change the user is told about.
ORDER_CHANGES = (ORDER_CANCEL_REQUESTED, ORDER_CANCELED, ORDER_SHIPPED, ORDER_DELIVERED)
# What Order asks for on an operator's behalf: Payment acts on it (the user is told the outcome).
OPERATOR_REQUESTS = (REFUND_RETRY_REQUESTED,)
# The events of the order saga, as published (the seed's alias is only read).
SAGA_EVENTS = (ORDER_INITIATED, *STEP_OUTCOMES, ORDER_TIMED_OUT, *CANCEL_OUTCOMES, *ORDER_CHANGES, *OPERATOR_REQUESTS)
# Every event name that may be on the wire, the seed's alias included (commands are not events).
ALL_NAMES = (*SAGA_EVENTS, INVENTORY_RESERVED_SEED_ALIAS, USER_REGISTERED)

# PAYMENT_FAIL reasons on the wire (the seed's spelling)
INSUFFICIENT_FUND = "insufficientFund"
SERVER_ERROR = "serverError"


class InvalidEvent(ValueError):
    """A message that is not a valid event of this version: it goes to the dead-letter topic."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    eventId: uuid.UUID = Field(default_factory=new_id)
    correlationId: str
    eventName: str = Field(min_length=1, max_length=64)
    version: str = VERSION
    timestamp: AwareDatetime = Field(default_factory=utcnow)  # RFC 3339 requires an offset
    orderId: str | None = Field(None, max_length=64)
    userId: str | None = Field(None, max_length=64)
    orderStatus: str | None = None
    paymentType: str | None = None
    productId: str | None = Field(None, max_length=64)
    productQuantity: int | None = Field(None, ge=1, le=100_000)
    price: Decimal | None = Field(None, max_digits=14, decimal_places=2)
    totalAmount: Decimal | None = Field(None, max_digits=14, decimal_places=2)
    currency: str | None = Field(None, max_length=3)
    transactionId: str | None = None
    failReason: str | None = Field(None, max_length=200)
    inventoryFailReason: str | None = Field(None, max_length=200)
    isPartialOrder: bool | None = None
    email: str | None = Field(None, max_length=320)
    name: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=32)

    def __eq__(self, other: object) -> bool:
        """The same event whether it was read as a plain envelope or with its typed payload (the
        typed models add constraints, not fields)."""
        if not isinstance(other, Event):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(self.eventId)

    @field_serializer("price", "totalAmount")
    def _money(self, v: Decimal | None) -> float | None:
        return None if v is None else float(v)

    @property
    def name_canonical(self) -> str:
        return ALIASES.get(self.eventName, self.eventName)

    def to_bytes(self) -> bytes:
        data = self.model_dump(mode="json", exclude_none=True)
        data["timestamp"] = self.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return orjson.dumps(data)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Event:
        """The event with its typed payload (`TYPES`) when it has every field its name requires,
        else as a plain envelope: a handler that needs what is missing refuses it (dead letter)."""
        if raw is None:
            raise InvalidEvent("empty message")
        if len(raw) > MAX_EVENT_BYTES:
            raise InvalidEvent(f"message of {len(raw)} bytes is over the {MAX_EVENT_BYTES} limit")
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InvalidEvent(f"not JSON: {e}") from e
        if not isinstance(data, dict):
            raise InvalidEvent("an event is a JSON object")
        version = data.get("version", VERSION)
        if not isinstance(version, str) or not version.startswith("1."):
            raise InvalidEvent(f"unsupported event version {version!r}")
        name = data.get("eventName")
        typed = TYPES.get(ALIASES.get(name, name)) if isinstance(name, str) else None
        if typed is not None:
            try:
                return typed.model_validate(data)
            except ValidationError:
                pass  # read as a plain envelope below, for the error or for a handler to refuse
        try:
            return Event.model_validate(data)
        except ValidationError as e:
            raise InvalidEvent(f"invalid event: {e.errors(include_url=False)}") from e


# ---- a typed payload per event name ------------------------------------------------------------
# The wire format stays the envelope above (SPEC section 3); each name's model makes the fields
# that its readers need required. Producers build events through them (`new_event`), so what a
# step publishes always carries them; the JSON Schemas in docs/events/ are generated from them.


class OrderEvent(Event):
    """An event of one order's saga: the order and its user are always named."""

    orderId: str = Field(min_length=1, max_length=64)
    userId: str = Field(min_length=1, max_length=64)


class OrderInitiated(OrderEvent):
    orderStatus: str = "INITIATED"
    paymentType: str
    productId: str = Field(min_length=1, max_length=64)
    productQuantity: int = Field(ge=1, le=100_000)
    price: Decimal = Field(max_digits=14, decimal_places=2)
    totalAmount: Decimal = Field(max_digits=14, decimal_places=2)
    currency: str = Field(min_length=3, max_length=3)


class PaymentDone(OrderEvent):
    """The charge went through: what Inventory needs to reserve comes with it."""

    productId: str = Field(min_length=1, max_length=64)
    productQuantity: int = Field(ge=1, le=100_000)
    totalAmount: Decimal = Field(max_digits=14, decimal_places=2)
    currency: str = Field(min_length=3, max_length=3)
    transactionId: str


class PaymentFail(OrderEvent):
    failReason: str = Field(max_length=200)  # insufficientFund | serverError


class InventoryReserved(OrderEvent):
    productId: str = Field(min_length=1, max_length=64)
    productQuantity: int = Field(ge=1, le=100_000)


class InventoryInsufficient(OrderEvent):
    productId: str = Field(min_length=1, max_length=64)
    productQuantity: int = Field(ge=1, le=100_000)
    inventoryFailReason: str = Field(max_length=200)
    isPartialOrder: bool = False


class RefundEvent(OrderEvent):
    """REFUND_INITIATED, REFUND_DONE: the amount is the one the ledger charged."""

    totalAmount: Decimal = Field(max_digits=14, decimal_places=2)
    currency: str = Field(min_length=3, max_length=3)


class RefundFailed(RefundEvent):
    failReason: str = Field(max_length=200)


class OrderTimedOut(OrderEvent):
    failReason: str = Field(max_length=200)  # TIMEOUT


class OrderCancelRequested(OrderEvent):
    """The owner canceled the order: what was done is to be undone (Payment refunds or voids,
    Inventory releases or blocks)."""

    orderStatus: str = "CANCELING"
    productId: str = Field(min_length=1, max_length=64)
    productQuantity: int = Field(ge=1, le=100_000)
    totalAmount: Decimal = Field(max_digits=14, decimal_places=2)
    currency: str = Field(min_length=3, max_length=3)


class PaymentVoided(OrderEvent):
    """A cancel found nothing charged: the order is voided at the wallet (a late debit is refused)."""


class InventoryReleased(OrderEvent):
    """A cancel's answer from Inventory: the reservation given back, or none held (and none will be)."""

    productId: str = Field(min_length=1, max_length=64)
    productQuantity: int = Field(ge=1, le=100_000)


class OrderChange(OrderEvent):
    """ORDER_CANCELED, ORDER_SHIPPED, ORDER_DELIVERED: Order's announcement of a new status."""

    orderStatus: str
    productId: str = Field(min_length=1, max_length=64)
    productQuantity: int = Field(ge=1, le=100_000)
    totalAmount: Decimal = Field(max_digits=14, decimal_places=2)
    currency: str = Field(min_length=3, max_length=3)


class RefundRetryRequested(OrderEvent):
    """An operator asks Payment to retry the refund of an order whose refund failed: what the
    ledger charged is given back, through the wallet, once."""

    orderStatus: str
    totalAmount: Decimal = Field(max_digits=14, decimal_places=2)
    currency: str = Field(min_length=3, max_length=3)


class UserRegistered(Event):
    userId: str = Field(min_length=1, max_length=64)
    email: str = Field(min_length=3, max_length=320)
    name: str = Field(max_length=200)


class Command(OrderEvent):
    """An orchestrator's command: the step it asks for is its name; `cause` names the event that
    led to it, whose fields it carries, so the participant runs the same step code as when that
    event reaches it directly (choreography)."""

    cause: str = Field(min_length=1, max_length=64)


TYPES: dict[str, type[Event]] = {
    ORDER_INITIATED: OrderInitiated,
    PAYMENT_DONE: PaymentDone,
    PAYMENT_FAIL: PaymentFail,
    INVENTORY_RESERVED: InventoryReserved,
    INVENTORY_INSUFFICIENT: InventoryInsufficient,
    REFUND_INITIATED: RefundEvent,
    REFUND_DONE: RefundEvent,
    REFUND_FAILED: RefundFailed,
    ORDER_TIMED_OUT: OrderTimedOut,
    ORDER_CANCEL_REQUESTED: OrderCancelRequested,
    PAYMENT_VOIDED: PaymentVoided,
    INVENTORY_RELEASED: InventoryReleased,
    ORDER_CANCELED: OrderChange,
    ORDER_SHIPPED: OrderChange,
    ORDER_DELIVERED: OrderChange,
    REFUND_RETRY_REQUESTED: RefundRetryRequested,
    USER_REGISTERED: UserRegistered,
    **{name: Command for name in COMMANDS},
}


def typed_as(event: Event, model: type[Event]) -> Event:
    """The event as `model` (its payload complete), or a ValueError naming what is missing: the
    handler refuses it and it goes to the dead-letter topic."""
    if isinstance(event, model):
        return event
    try:
        return model.model_validate(event.model_dump(exclude_none=True))
    except ValidationError as e:
        missing = sorted({str(err["loc"][0]) for err in e.errors()})
        raise ValueError(f"{event.eventName} without a valid {', '.join(missing)}") from None


def new_event(event_name: str, /, *, correlation_id: str, **fields: Any) -> Event:
    """A bare envelope with the fields given (for tests and tools that forge events)."""
    return Event(eventName=event_name, correlationId=correlation_id, **fields)


def make_event(event_name: str, /, *, correlation_id: str, **fields: Any) -> Event:
    """An event to publish, checked against its name's payload model: a producer cannot stage an
    event that lacks what its readers need."""
    model = TYPES.get(ALIASES.get(event_name, event_name), Event)
    return model(eventName=event_name, correlationId=correlation_id, **fields)


def command(name: str, cause: Event) -> Event:
    """The command `name` for the step that `cause` starts: a new message (its own eventId) with
    the cause's fields."""
    fields = cause.model_dump(exclude_none=True, exclude={"eventId", "eventName", "timestamp", "correlationId"})
    fields["cause"] = cause.eventName
    return make_event(name, correlation_id=cause.correlationId, **fields)


def as_cause(cmd: Event) -> Event:
    """What a participant's step sees of a command: the event that led to it (typed when complete,
    as `Event.from_bytes` reads it), under the command's eventId so that handling it is recorded
    once. ValueError for a command without a cause (dead letter)."""
    cause = getattr(cmd, "cause", None)
    if not isinstance(cmd, Command) or not cause:
        raise ValueError(f"{cmd.eventName} without a valid orderId, userId and cause")
    data = cmd.model_dump(exclude_none=True, exclude={"cause"})
    data["eventName"] = cause
    typed = TYPES.get(ALIASES.get(cause, cause))
    if typed is not None and typed is not Command:
        try:
            return typed.model_validate(data)
        except ValidationError:
            pass
    return Event.model_validate(data)
