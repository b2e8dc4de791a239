"""The Kafka event envelope of SPEC section 3: JSON, camelCase, keyed by orderId."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_serializer

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
# Every event name that may be on the wire, the seed's alias included.
ALL_NAMES = (
    ORDER_INITIATED,
    *STEP_OUTCOMES,
    INVENTORY_RESERVED_SEED_ALIAS,
    ORDER_TIMED_OUT,
    USER_REGISTERED,
)

# PAYMENT_FAIL reasons on the wire (the seed's spelling)
INSUFFICIENT_FUND = "insufficientFund"
SERVER_ERROR = "serverError"


class InvalidEvent(ValueError):
    """A message that is not a valid event of this version: it goes to the dead-letter topic."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    eventId: uuid.UUID = Field(default_factory=uuid.uuid4)
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
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise InvalidEvent(f"invalid event: {e.errors(include_url=False)}") from e


def new_event(event_name: str, /, *, correlation_id: str, **fields: Any) -> Event:
    return Event(eventName=event_name, correlationId=correlation_id, **fields)
