"""The Kafka event envelope (`tinysaga.contracts.events`, SPEC section 3): round trips, exact money,
RFC 3339 UTC timestamps, tolerance of unknown fields, and rejection of anything that is not a valid
1.x event with `InvalidEvent` (and never any other exception)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinysaga.contracts import events as ev
from tinysaga.contracts.events import MAX_EVENT_BYTES, VERSION, Event, InvalidEvent, new_event

D = Decimal
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def minimal(**extra: object) -> dict[str, object]:
    return {"correlationId": "corr-1", "eventName": ev.PAYMENT_DONE, **extra}


def raw(data: object) -> bytes:
    return orjson.dumps(data)


def full_event() -> Event:
    return new_event(
        ev.PAYMENT_DONE,
        correlation_id="corr-42",
        orderId="ord-1",
        userId="user-1",
        orderStatus="PAYMENT_DONE",
        paymentType="WALLET",
        productId="p-1",
        productQuantity=3,
        price=D("19.99"),
        totalAmount=D("19.99") * 3,
        currency="USD",
        transactionId="tx-1",
        failReason=ev.INSUFFICIENT_FUND,
        inventoryFailReason="none left",
        isPartialOrder=False,
        email="a@b.example",
        name="Ada",
        phone="+100",
    )


# ---- round trip ---------------------------------------------------------------------------------


def test_round_trip_keeps_every_field() -> None:
    e = full_event()
    back = Event.from_bytes(e.to_bytes())
    assert back == e
    assert back.model_dump() == e.model_dump()
    assert back.eventId == e.eventId
    assert back.version == VERSION == "1.0"


def test_the_wire_is_camel_case_json_with_the_envelope() -> None:
    e = full_event()
    data = orjson.loads(e.to_bytes())
    for key in ("eventId", "correlationId", "eventName", "version", "timestamp", "orderId", "totalAmount"):
        assert key in data, key
    assert data["eventName"] == ev.PAYMENT_DONE
    assert data["version"] == "1.0"
    assert uuid.UUID(data["eventId"]) == e.eventId
    assert data["productQuantity"] == 3
    assert data["isPartialOrder"] is False  # False is a value, not a missing field
    assert not any("_" in k for k in data), "snake_case leaked onto the wire"


def test_absent_optional_fields_are_left_out_of_the_wire() -> None:
    data = orjson.loads(new_event(ev.ORDER_INITIATED, correlation_id="c").to_bytes())
    assert set(data) == {"eventId", "correlationId", "eventName", "version", "timestamp"}


def test_every_new_event_gets_its_own_id() -> None:
    a = new_event(ev.PAYMENT_DONE, correlation_id="c")
    b = new_event(ev.PAYMENT_DONE, correlation_id="c")
    assert a.eventId != b.eventId


# ---- money --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "total"),
    [
        (D("19.99"), D("19.99") * 3),  # 59.97, which binary floats cannot hold exactly
        (D("0.10"), D("0.1") + D("0.2")),  # 0.3, not 0.30000000000000004
        (D("0.01"), D("0.01")),
        (D("999999999999.99"), D("999999999999.99")),  # the largest amount the envelope allows
        (D("10"), D("100.00")),
    ],
)
def test_money_round_trips_exactly(price: Decimal, total: Decimal) -> None:
    e = new_event(ev.ORDER_INITIATED, correlation_id="c", price=price, totalAmount=total)
    back = Event.from_bytes(e.to_bytes())
    assert back.price == price
    assert back.totalAmount == total
    assert isinstance(back.totalAmount, Decimal)


def test_59_97_is_59_97_on_the_wire_and_back() -> None:
    e = new_event(ev.ORDER_INITIATED, correlation_id="c", totalAmount=D("19.99") * 3)
    assert b'"totalAmount":59.97' in e.to_bytes()
    assert Event.from_bytes(e.to_bytes()).totalAmount == D("59.97")


def test_money_is_read_from_json_numbers_without_binary_float_damage() -> None:
    e = Event.from_bytes(b'{"correlationId":"c","eventName":"X","price":0.1,"totalAmount":59.97}')
    assert e.price == D("0.1")
    assert e.totalAmount == D("59.97")


@settings(max_examples=150, deadline=None)
@given(
    amount=st.decimals(
        min_value=D("0.01"), max_value=D("999999999999.99"), places=2, allow_nan=False, allow_infinity=False
    )
)
def test_any_two_place_amount_round_trips_exactly(amount: Decimal) -> None:
    e = new_event(ev.ORDER_INITIATED, correlation_id="c", price=amount, totalAmount=amount)
    back = Event.from_bytes(e.to_bytes())
    assert back.price == amount
    assert back.totalAmount == amount


@pytest.mark.parametrize("value", [1.234, 0.30000000000000004, "abc", True, [1], {"a": 1}, 1e15])
def test_money_with_more_than_two_places_or_of_the_wrong_type_is_invalid(value: object) -> None:
    with pytest.raises(InvalidEvent):
        Event.from_bytes(raw(minimal(totalAmount=value)))


# ---- timestamp ----------------------------------------------------------------------------------


def test_timestamp_is_rfc3339_utc_with_z() -> None:
    data = orjson.loads(full_event().to_bytes())
    assert RFC3339_UTC.match(data["timestamp"]), data["timestamp"]
    parsed = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
    assert abs(parsed - datetime.now(UTC)) < timedelta(minutes=5)


def test_a_timestamp_with_an_offset_is_written_back_in_utc() -> None:
    e = Event.from_bytes(raw(minimal(timestamp="2024-03-01T12:30:00.250+02:00")))
    data = orjson.loads(e.to_bytes())
    assert data["timestamp"] == "2024-03-01T10:30:00.250000Z"
    assert Event.from_bytes(e.to_bytes()).timestamp == e.timestamp


def test_a_timestamp_in_another_zone_is_the_same_instant() -> None:
    when = datetime(2024, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))
    e = new_event(ev.PAYMENT_DONE, correlation_id="c", timestamp=when)
    data = orjson.loads(e.to_bytes())
    assert data["timestamp"] == "2025-01-01T04:59:59.000000Z"


@pytest.fixture
def host_in_new_york_winter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone is UTC-5 (a POSIX TZ string, needs no tz database)."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_timestamp_without_offset_does_not_depend_on_the_hosts_zone(host_in_new_york_winter: None) -> None:
    # RFC 3339 requires an offset. A timestamp without one must either be refused or read as UTC;
    # it must not be shifted by whatever zone the consuming host happens to run in.
    try:
        e = Event.from_bytes(raw(minimal(timestamp="2024-01-01T12:00:00")))
    except InvalidEvent:
        return
    data = orjson.loads(e.to_bytes())
    assert data["timestamp"] == "2024-01-01T12:00:00.000000Z", data["timestamp"]


# ---- tolerance ----------------------------------------------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    e = Event.from_bytes(raw(minimal(orderId="o-1", somethingNew={"x": [1, 2]}, another=7)))
    assert e.orderId == "o-1"
    assert "somethingNew" not in orjson.loads(e.to_bytes())


def test_a_missing_version_means_1_0_and_any_1_x_is_accepted() -> None:
    assert Event.from_bytes(raw(minimal())).version == "1.0"
    assert Event.from_bytes(raw(minimal(version="1.7"))).version == "1.7"


def test_the_seed_alias_is_accepted_and_canonicalised() -> None:
    e = Event.from_bytes(raw(minimal(eventName=ev.INVENTORY_RESERVED_SEED_ALIAS)))
    assert e.eventName == ev.INVENTORY_RESERVED_SEED_ALIAS  # kept as sent
    assert e.name_canonical == ev.INVENTORY_RESERVED
    assert Event.from_bytes(raw(minimal())).name_canonical == ev.PAYMENT_DONE


def test_a_message_of_exactly_the_limit_is_accepted() -> None:
    body = raw(minimal())
    padded = body[:-1] + b" " * (MAX_EVENT_BYTES - len(body)) + b"}"
    assert len(padded) == MAX_EVENT_BYTES
    assert Event.from_bytes(padded).correlationId == "corr-1"


# ---- rejection ----------------------------------------------------------------------------------


def test_over_64_kib_is_invalid_even_if_well_formed() -> None:
    body = raw(minimal())
    padded = body[:-1] + b" " * (MAX_EVENT_BYTES - len(body) + 1) + b"}"
    assert len(padded) == MAX_EVENT_BYTES + 1
    assert MAX_EVENT_BYTES == 64 * 1024
    with pytest.raises(InvalidEvent):
        Event.from_bytes(padded)
    with pytest.raises(InvalidEvent):
        Event.from_bytes(raw(minimal(failReason="x" * 100, junk="y" * 70_000)))


@pytest.mark.parametrize(
    "message",
    [
        None,
        b"",
        b"{",
        b"not json",
        b'{"correlationId": "c", "eventName": "X",}',
        b"\xff\xfe\x00",
        b"[" * 5000,
        b'{"correlationId":"c","eventName":"X","price":1e400}',
        b'{"correlationId":"c","eventName":"X","productQuantity":1000000000000000000000000000000}',
    ],
)
def test_malformed_messages_are_invalid(message: bytes | None) -> None:
    with pytest.raises(InvalidEvent):
        Event.from_bytes(message)


@pytest.mark.parametrize(
    "message", [b"null", b"[]", b'[{"correlationId":"c","eventName":"X"}]', b'"event"', b"42", b"true"]
)
def test_json_that_is_not_an_object_is_invalid(message: bytes) -> None:
    with pytest.raises(InvalidEvent):
        Event.from_bytes(message)


@pytest.mark.parametrize("version", ["2.0", "2", "1", "10.0", "0.9", "", 1, 1.0, None, ["1.0"]])
def test_unsupported_versions_are_invalid(version: object) -> None:
    with pytest.raises(InvalidEvent):
        Event.from_bytes(raw(minimal(version=version)))


@pytest.mark.parametrize(
    "fields",
    [
        {"correlationId": None},
        {"correlationId": 5},
        {"eventName": ""},
        {"eventName": 5},
        {"eventName": "X" * 65},
        {"eventId": "not-a-uuid"},
        {"timestamp": "yesterday"},
        {"timestamp": 12.5e20},
        {"orderId": ["o"]},
        {"orderId": "o" * 65},
        {"productQuantity": 0},
        {"productQuantity": -1},
        {"productQuantity": 100_001},
        {"productQuantity": 1.5},
        {"productQuantity": "many"},
        {"currency": "USDX"},
        {"isPartialOrder": "maybe"},
        {"failReason": "x" * 201},
        {"email": {"a": "b"}},
    ],
)
def test_wrong_types_and_out_of_range_values_are_invalid(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidEvent):
        Event.from_bytes(raw(minimal(**fields)))


@pytest.mark.parametrize("missing", ["correlationId", "eventName"])
def test_required_fields_are_required(missing: str) -> None:
    data = minimal()
    del data[missing]
    with pytest.raises(InvalidEvent):
        Event.from_bytes(raw(data))


def test_invalid_event_is_a_value_error_for_the_dead_letter_path() -> None:
    assert issubclass(InvalidEvent, ValueError)


def test_the_quantity_bounds_are_inclusive() -> None:
    assert Event.from_bytes(raw(minimal(productQuantity=1))).productQuantity == 1
    assert Event.from_bytes(raw(minimal(productQuantity=100_000))).productQuantity == 100_000


# ---- fuzzing ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise_anything_but_invalid_event(message: bytes) -> None:
    try:
        e = Event.from_bytes(message)
    except InvalidEvent:
        return
    assert isinstance(e, Event)


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = (
    JSON_SCALARS | st.lists(JSON_SCALARS, max_size=3) | st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=2)
)
ENVELOPE_KEYS = list(Event.model_fields)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.dictionaries(st.sampled_from(ENVELOPE_KEYS) | st.text(max_size=8), JSON_VALUES, max_size=8),
    base=st.booleans(),
)
def test_arbitrary_json_objects_never_raise_anything_but_invalid_event(fields: dict[str, object], base: bool) -> None:
    data = {**minimal(), **fields} if base else fields
    try:
        e = Event.from_bytes(raw(data))
    except InvalidEvent:
        return
    # whatever was accepted can be written and read back unchanged
    again = Event.from_bytes(e.to_bytes())
    assert again == e
