"""Contract tests of the events (docs/events/*.json, generated from the typed payloads): each
reader accepts every event it handles in the forms the contract allows (only the required fields;
unknown extra fields; the seed's alias), as its typed payload; and an event missing a field its
readers need is not taken for a complete one."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from tinysaga.contracts import docs, saga
from tinysaga.contracts import events as ev

SCHEMAS = docs.event_schemas()

EXAMPLES: dict[str, Any] = {
    "string": "x-1",
    "integer": 2,
    "number": 12.5,
    "boolean": False,
}


def minimal(name: str) -> dict[str, Any]:
    """An event of `name` with only the fields its schema requires, each with a valid value."""
    schema = SCHEMAS[name]
    out: dict[str, Any] = {}
    for field in schema["required"]:
        prop = schema["properties"][field]
        if field == "eventName":
            out[field] = name
        elif field == "eventId":
            out[field] = str(uuid.uuid4())
        elif field == "timestamp":
            out[field] = "2026-12-01T10:00:00.000000Z"
        elif field == "version":
            out[field] = "1.0"
        elif field == "currency":
            out[field] = "USD"
        else:
            out[field] = EXAMPLES[prop.get("type") or prop["anyOf"][0]["type"]]
    return out


HANDLED = sorted(
    {(step.participant, name) for step in saga.STEPS for name in step.handled_events},
)


@pytest.mark.parametrize(("participant", "name"), HANDLED)
def test_a_reader_takes_an_event_with_only_its_required_fields(participant: str, name: str) -> None:
    e = ev.Event.from_bytes(orjson.dumps(minimal(name)))
    assert isinstance(e, ev.TYPES[name]), (participant, name)
    assert saga.routes(
        participant,
        saga.BY_NAME[
            next(s.name for s in saga.STEPS if name in s.handled_events and s.participant == participant)
        ].topic,
    )[name]


@pytest.mark.parametrize("name", sorted(ev.TYPES))
def test_unknown_fields_are_ignored_and_the_payload_stays_typed(name: str) -> None:
    data = {**minimal(name), "somethingNew": {"nested": [1, 2]}, "shippingCarrier": "later"}
    e = ev.Event.from_bytes(orjson.dumps(data))
    assert isinstance(e, ev.TYPES[name])
    assert "somethingNew" not in orjson.loads(e.to_bytes())


@pytest.mark.parametrize("name", sorted(ev.TYPES))
def test_what_a_producer_builds_validates_against_the_schema(name: str) -> None:
    import jsonschema_rs

    e = ev.make_event(
        name,
        **{
            k: v
            for k, v in ev.Event.from_bytes(orjson.dumps(minimal(name))).model_dump().items()
            if k not in ("eventName", "correlationId")
        },
        correlation_id="c-1",
    )
    jsonschema_rs.validator_for(SCHEMAS[name]).validate(orjson.loads(e.to_bytes()))


@pytest.mark.parametrize(
    "name", sorted(n for n in ev.TYPES if len(SCHEMAS[n]["required"]) > len(docs.ENVELOPE_REQUIRED))
)
def test_an_event_missing_a_required_field_is_read_as_a_plain_envelope_and_refused_by_typed_as(name: str) -> None:
    data = minimal(name)
    field = sorted(set(SCHEMAS[name]["required"]) - docs.ENVELOPE_REQUIRED)[0]
    del data[field]
    e = ev.Event.from_bytes(orjson.dumps(data))
    assert not isinstance(e, ev.TYPES[name])
    with pytest.raises(ValueError, match=field):
        ev.typed_as(e, ev.TYPES[name])
    with pytest.raises(ValueError):  # and no producer can publish it
        ev.make_event(
            name, correlation_id="c", **{k: v for k, v in data.items() if k not in ("eventName", "correlationId")}
        )


def test_the_seed_alias_is_read_as_inventory_reserved() -> None:
    data = {**minimal(ev.INVENTORY_RESERVED), "eventName": ev.INVENTORY_RESERVED_SEED_ALIAS}
    e = ev.Event.from_bytes(orjson.dumps(data))
    assert isinstance(e, ev.InventoryReserved) and e.name_canonical == ev.INVENTORY_RESERVED
