"""The settings that let the same processes run off one machine (deploy/k8s): where they listen,
and where the database, Kafka and the other services are. Their defaults keep the local stack
exactly as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tinysaga.platform.secrets import database_dsn, db_passwords
from tinysaga.platform.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("TINYSAGA_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_the_defaults_are_the_local_stacks_loopback_addresses(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.bind_host == "127.0.0.1" and s.pg_host == "127.0.0.1"
    assert s.kafka_bootstrap == f"127.0.0.1:{s.kafka_port}"
    assert s.service_url("order", 2) == f"http://127.0.0.1:{s.port_of('order', 2)}"


def test_a_service_url_template_names_one_address_for_all_replicas(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TINYSAGA_SERVICE_URL_TEMPLATE", "http://{service}.shop.svc:{port}")
    s = Settings()
    assert s.service_url("wallet") == f"http://wallet.shop.svc:{s.port_of('wallet')}"
    assert s.service_url("order", 2) == s.service_url("order", 1) == f"http://order.shop.svc:{s.port_of('order')}"


def test_kafka_and_postgres_addresses_are_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("TINYSAGA_KAFKA_BOOTSTRAP_SERVERS", "k-0:9092,k-1:9092")
    clean_env.setenv("TINYSAGA_PG_HOST", "db-rw")
    clean_env.setenv("TINYSAGA_PG_PORT", "5432")
    clean_env.setenv("TINYSAGA_HOME", str(tmp_path))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db.json").write_text(json.dumps({"order": "pw-1"}))
    s = Settings()
    assert s.kafka_bootstrap == "k-0:9092,k-1:9092"
    assert database_dsn(s, "order") == "postgresql://tinysaga_order:pw-1@db-rw:5432/tinysaga_order"


def test_database_passwords_can_be_one_file_per_role(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As a Kubernetes Secret per role is mounted: db/<service>/password, only the pod's own."""
    clean_env.setenv("TINYSAGA_HOME", str(tmp_path))
    for svc, pw in (("order", "pw-order\n"), ("wallet", "pw-wallet")):
        (tmp_path / "secrets" / "db" / svc).mkdir(parents=True)
        (tmp_path / "secrets" / "db" / svc / "password").write_text(pw)
    assert db_passwords(Settings()) == {"order": "pw-order", "wallet": "pw-wallet"}
    # db.json, when there is one, is what the local stack wrote: it wins
    (tmp_path / "secrets" / "db.json").write_text(json.dumps({"order": "local"}))
    assert db_passwords(Settings()) == {"order": "local"}


def test_without_any_password_file_the_error_names_db_json(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("TINYSAGA_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="db.json"):
        db_passwords(Settings())
