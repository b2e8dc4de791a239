"""Settings (`tinysaga.platform.settings`): SPEC defaults, TINYSAGA_* overrides, derived ports and the
production profile's refusal of a default admin password."""

from __future__ import annotations

import os
from itertools import combinations

import pytest

from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.platform.settings import SERVICE_PORT_OFFSETS, Settings, split_names


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No TINYSAGA_* variable from the caller (`./tiny-saga test` sets some) leaks into a test."""
    for key in list(os.environ):
        if key.startswith("TINYSAGA_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_defaults_match_the_spec(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.gateway_port == 8080
    assert s.kafka_port == 9092
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.currency == "USD"
    assert s.admin_email == "admin@tinysaga.local"
    assert s.profile == "local"
    assert s.topic == "order-topic"
    assert s.max_body_bytes == 64 * 1024
    assert s.rate_auth_per_min == 60


def test_the_default_topology_runs_replicas(clean_env: pytest.MonkeyPatch) -> None:
    # SPEC 1: at least two Order and two Inventory instances, several partitions
    s = Settings()
    assert s.replicas("order") >= 2
    assert s.replicas("inventory") >= 2
    assert s.replicas("payment") == 1
    assert s.topic_partitions > 1


def test_local_profile_has_the_documented_admin_password(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings().effective_admin_password == "tinysaga-admin"


def test_gateway_port_is_overridden_by_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TINYSAGA_GATEWAY_PORT", "18080")
    s = Settings()
    assert s.gateway_port == 18080
    assert isinstance(s.gateway_port, int)
    assert s.kafka_port == 9092  # the others keep their defaults


def test_overrides_are_read_when_settings_are_made_not_at_import(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings().gateway_port == 8080
    clean_env.setenv("TINYSAGA_GATEWAY_PORT", "9999")
    assert Settings().gateway_port == 9999
    clean_env.delenv("TINYSAGA_GATEWAY_PORT")
    assert Settings().gateway_port == 8080


def test_other_overrides_are_typed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TINYSAGA_KAFKA_PORT", "19092")
    clean_env.setenv("TINYSAGA_CURRENCY", "EUR")
    clean_env.setenv("TINYSAGA_SAGA_TIMEOUT_SECONDS", "2.5")
    clean_env.setenv("TINYSAGA_ORDER_REPLICAS", "3")
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.currency == "EUR"
    assert s.saga_timeout_seconds == 2.5
    assert s.replicas("order") == 3


def test_a_port_that_is_not_a_number_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TINYSAGA_GATEWAY_PORT", "eighty")
    with pytest.raises(ValueError):
        Settings()


def test_port_of_gives_distinct_ports_for_replicas(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    for service in ("order", "inventory"):
        ports = [s.port_of(service, r) for r in range(1, s.replicas(service) + 1)]
        assert len(set(ports)) == len(ports) == s.replicas(service)
        assert ports[0] == s.port_of(service)  # replica 1 is the default
    assert s.port_of("order", 1) == s.service_port_base + SERVICE_PORT_OFFSETS["order"]
    assert s.service_url("order", 2) == f"http://127.0.0.1:{s.port_of('order', 2)}"


def test_no_two_service_instances_share_a_port(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    ports = {
        (service, r): s.port_of(service, r)
        for service in SERVICE_PORT_OFFSETS
        for r in range(1, s.replicas(service) + 1)
    }
    for (a, pa), (b, pb) in combinations(ports.items(), 2):
        assert pa != pb, f"{a} and {b} both on {pa}"
    public = {s.gateway_port, s.kafka_port, s.kafka_controller_port, s.pg_port}
    assert not public & set(ports.values())


def test_ports_follow_the_base(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TINYSAGA_SERVICE_PORT_BASE", "20000")
    s = Settings()
    assert s.port_of("order", 2) == 20000 + SERVICE_PORT_OFFSETS["order"] + 1
    assert s.effective_smtp_port == 20000 + SERVICE_PORT_OFFSETS["smtp"]


def test_production_without_an_admin_password_refuses(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TINYSAGA_PROFILE", "production")
    s = Settings()
    with pytest.raises(RuntimeError, match="TINYSAGA_ADMIN_PASSWORD"):
        _ = s.effective_admin_password


def test_production_with_an_admin_password_uses_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TINYSAGA_PROFILE", "production")
    clean_env.setenv("TINYSAGA_ADMIN_PASSWORD", "a-real-secret-123")
    assert Settings().effective_admin_password == "a-real-secret-123"


def test_an_empty_admin_password_in_production_is_no_password(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TINYSAGA_PROFILE", "production")
    clean_env.setenv("TINYSAGA_ADMIN_PASSWORD", "")
    with pytest.raises(RuntimeError):
        _ = Settings().effective_admin_password


def test_the_order_service_handles_every_event_that_moves_an_order(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.handled_events("order", saga.ORDER_TOPIC) is None  # no setting: the saga definition's names
    handled = saga.routes("order", saga.ORDER_TOPIC, s.handled_events("order", saga.ORDER_TOPIC))
    for name in (*ev.STEP_OUTCOMES, ev.INVENTORY_RESERVED_SEED_ALIAS):
        assert name in handled, name
    assert ev.ORDER_INITIATED not in handled  # Order's own event
    assert ev.ORDER_INITIATED in saga.handled_by("payment")
    assert ev.PAYMENT_DONE in saga.handled_by("inventory")


def test_a_setting_narrows_the_handled_names(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TINYSAGA_NOTIFICATION_EVENTS", " PAYMENT_DONE, REFUND_DONE ,,")
    names = Settings().handled_events("notification", saga.ORDER_TOPIC)
    assert names == frozenset({ev.PAYMENT_DONE, ev.REFUND_DONE})
    assert set(saga.routes("notification", saga.ORDER_TOPIC, names)) == names


def test_a_setting_naming_an_event_the_saga_does_not_route_to_the_service_is_refused(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("TINYSAGA_INVENTORY_EVENTS", "PAYMENT_DONE,ORDER_INITIATED")
    names = Settings().handled_events("inventory", saga.ORDER_TOPIC)
    with pytest.raises(saga.SagaDefinitionError, match="ORDER_INITIATED"):
        saga.routes("inventory", saga.ORDER_TOPIC, names)


def test_handled_trims_and_skips_empty_names(clean_env: pytest.MonkeyPatch) -> None:
    assert split_names(" A, B ,,C ,") == frozenset({"A", "B", "C"})
    assert split_names("") == frozenset()
