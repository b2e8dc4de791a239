"""The init container's command (`python -m tinysaga.infra.k8s_init NAME`): it knows every name the
manifests give it, and refuses any other instead of starting a pod that migrates nothing."""

from __future__ import annotations

import pytest

from tests.unit.k8s_support import containers, objects
from tinysaga.infra import k8s_init
from tinysaga.platform.secrets import SERVICES_WITH_DB


def test_every_init_container_names_a_process_it_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []

    async def fake_run(name: str) -> None:  # the real one needs the database and the broker
        started.append(name)

    monkeypatch.setattr(k8s_init, "run", fake_run)
    monkeypatch.setattr(k8s_init, "setup_logging", lambda *_: None)  # leave pytest's log handlers alone
    names = []
    for d in objects("ha", "Deployment"):
        for c in containers(d, init=True):
            if c["command"][:3] == ["python", "-m", "tinysaga.infra.k8s_init"]:
                names.append(c["command"][3])
                assert k8s_init.main(c["command"][3:]) == 0
    assert sorted(started) == sorted(names) == sorted([*SERVICES_WITH_DB, "relay"])


@pytest.mark.parametrize("argv", [[], ["web"], ["order", "extra"], ["gateway"]])
def test_an_unknown_or_missing_name_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert k8s_init.main(argv) == 2
    assert "usage" in capsys.readouterr().err


def test_migrations_wait_for_a_database_the_operator_has_not_made_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import asyncpg

    answers: list[object] = [
        ConnectionRefusedError("not listening yet"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InvalidPasswordError("password authentication failed"),  # the role is not there yet
        asyncpg.InvalidCatalogNameError('database "tinysaga_order" does not exist'),
        ["0001_orders.sql"],
    ]
    calls: list[tuple[str, str]] = []

    async def fake_apply(dsn: str, service: str) -> list[str]:
        calls.append((dsn, service))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(k8s_init, "apply_migrations", fake_apply)
    monkeypatch.setattr(k8s_init, "database_dsn", lambda s, svc: f"dsn-of-{svc}")
    monkeypatch.setattr(k8s_init, "RETRY_SECONDS", 0)
    asyncio.run(k8s_init.migrate(object(), "order"))
    assert calls == [("dsn-of-order", "order")] * 5 and not answers


def test_a_migration_that_fails_fails_the_init_container(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import asyncpg

    async def broken(dsn: str, service: str) -> list[str]:
        raise asyncpg.PostgresSyntaxError("syntax error at or near CREAT")

    monkeypatch.setattr(k8s_init, "apply_migrations", broken)
    monkeypatch.setattr(k8s_init, "database_dsn", lambda s, svc: "dsn")
    with pytest.raises(asyncpg.PostgresSyntaxError):
        asyncio.run(k8s_init.migrate(object(), "order"))
