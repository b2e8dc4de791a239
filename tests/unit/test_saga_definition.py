"""The saga declared once (contracts/saga.py): the definition is consistent, what is generated from
it (the README's saga section, docs/events/) has not drifted, and the checks that stop a service at
start-up catch a step without a handler, a handler without a step and a setting that widens."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tinysaga.contracts import docs, saga
from tinysaga.contracts import events as ev

REPO = Path(__file__).resolve().parents[2]


def test_the_definition_is_consistent() -> None:
    saga.check_definition()


def test_every_event_of_the_saga_is_published_by_one_step_and_handled() -> None:
    for name in ev.SAGA_EVENTS:
        assert len(saga.producers_of(name)) == 1, name
        assert any(name in s.handled_events for s in saga.STEPS), name


def test_the_forward_path_and_its_compensations() -> None:
    assert saga.BY_NAME["charge"].compensation == "refund"
    assert saga.BY_NAME["reserve"].compensation == "release"
    assert saga.routes("payment", saga.ORDER_TOPIC)[ev.INVENTORY_INSUFFICIENT].name == "refund"
    assert saga.routes("inventory", saga.ORDER_TOPIC)[ev.ORDER_TIMED_OUT].name == "release"
    assert saga.routes("order", saga.ORDER_TOPIC)[ev.INVENTORY_RESERVED_SEED_ALIAS].name == "track"


def test_the_readme_shows_the_saga_as_declared() -> None:
    readme = (REPO / "README.md").read_text()
    assert docs.readme_block() in readme, "the README's saga section drifted: run ./tiny-saga saga --write"


def test_the_event_schemas_are_generated_from_the_models() -> None:
    folder = REPO / "docs" / "events"
    schemas = docs.event_schemas()
    assert {p.stem for p in folder.glob("*.json")} == set(schemas)
    for name, schema in schemas.items():
        on_disk = (folder / f"{name}.json").read_text()
        assert on_disk == docs.schema_text(schema), f"docs/events/{name}.json drifted: run ./tiny-saga saga --write"


def test_a_step_without_a_handler_is_refused() -> None:
    with pytest.raises(saga.SagaDefinitionError, match="without a handler: \\['release'\\]"):
        saga.check_handlers("inventory", saga.ORDER_TOPIC, {"reserve": object()})


def test_a_handler_without_a_step_is_refused() -> None:
    with pytest.raises(saga.SagaDefinitionError, match="without a step: \\['cancel'\\]"):
        saga.check_handlers("inventory", saga.ORDER_TOPIC, {"reserve": 1, "release": 2, "cancel": 3})


def test_settings_may_narrow_but_not_widen() -> None:
    assert set(saga.routes("payment", saga.ORDER_TOPIC, {ev.ORDER_INITIATED})) == {ev.ORDER_INITIATED}
    with pytest.raises(saga.SagaDefinitionError, match="PAYMENT_DONE"):
        saga.routes("payment", saga.ORDER_TOPIC, {ev.ORDER_INITIATED, ev.PAYMENT_DONE})


def test_an_inconsistent_definition_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = (*saga.STEPS, saga.Step("audit", "order", "x", (ev.ORDER_INITIATED,), compensation="nothing"))
    monkeypatch.setattr(saga, "STEPS", broken)
    monkeypatch.setattr(saga, "BY_NAME", {s.name: s for s in broken})
    with pytest.raises(saga.SagaDefinitionError, match="nothing"):
        saga.check_definition()


def test_only_a_side_channel_may_gather_its_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step of the saga that gathered would hold every order up by its gather (ADR 54)."""
    assert [s.name for s in saga.STEPS if s.gather_seconds] == ["notify"]
    waiting = dataclasses.replace(saga.BY_NAME["reserve"], gather_seconds=0.2)
    broken = tuple(waiting if s.name == "reserve" else s for s in saga.STEPS)
    monkeypatch.setattr(saga, "STEPS", broken)
    monkeypatch.setattr(saga, "BY_NAME", {s.name: s for s in broken})
    with pytest.raises(saga.SagaDefinitionError, match="reserve gathers its events"):
        saga.check_definition()
