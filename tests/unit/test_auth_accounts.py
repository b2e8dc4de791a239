"""Auth's accounts (`tinysaga.auth.accounts`) against a fake repository: registering stages
USER_REGISTERED with the account, a password is checked the same way for an unknown email, and the
admin account is kept as configured."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from argon2 import PasswordHasher

from tinysaga.auth import accounts as accounts_module
from tinysaga.auth.accounts import authenticate, create_account, ensure_admin
from tinysaga.auth.repository import AccountExists
from tinysaga.contracts import events as ev


@dataclass
class FakeAccounts:
    """Accounts by id, unique by lowercased email, with the events their transaction staged; the
    same named methods as `AccountRepository`."""

    rows: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    published: list[ev.Event] = field(default_factory=list)

    async def create(
        self,
        user_id: uuid.UUID,
        email: str,
        password_hash: str,
        name: str,
        phone: str | None,
        role: str,
        registered: ev.Event,
    ) -> None:
        """The account and its event together; AccountExists (nothing staged) when the email is taken."""
        if await self.by_email(email) is not None:
            raise AccountExists(email)
        self.rows[user_id] = {
            "user_id": user_id,
            "email": email,
            "password_hash": password_hash,
            "name": name,
            "phone": phone,
            "role": role,
        }
        self.published.append(registered)

    async def by_email(self, email: str) -> dict[str, Any] | None:
        """The account of an email, in any case."""
        return next((r for r in self.rows.values() if r["email"].lower() == email.lower()), None)

    async def by_id(self, user_id: uuid.UUID) -> dict[str, Any] | None:
        return self.rows.get(user_id)

    async def reset_admin(self, user_id: uuid.UUID, password_hash: str) -> None:
        """A new hash, and the admin role."""
        self.rows[user_id].update(password_hash=password_hash, role="admin")

    async def make_admin(self, user_id: uuid.UUID) -> None:
        self.rows[user_id]["role"] = "admin"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same argon2id, at a cost a unit test can pay many times."""
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(accounts_module, "hasher", cheap)
    monkeypatch.setattr(accounts_module, "_DUMMY_HASH", cheap.hash("not-a-real-password"))


@pytest.fixture
def accounts() -> FakeAccounts:
    return FakeAccounts()


async def test_registering_stages_user_registered_with_the_account(accounts: FakeAccounts) -> None:
    user_id = await create_account(accounts, "Ann@Example.com", "s3cret-pass", "Ann", "+15550100")
    row = accounts.rows[user_id]
    assert row["role"] == "user" and accounts_module.hasher.verify(row["password_hash"], "s3cret-pass")
    [registered] = accounts.published
    assert isinstance(registered, ev.UserRegistered)
    assert (registered.userId, registered.email, registered.name, registered.phone) == (
        str(user_id),
        "Ann@Example.com",
        "Ann",
        "+15550100",
    )
    assert registered.correlationId == str(user_id)


async def test_an_email_registers_once_in_any_case(accounts: FakeAccounts) -> None:
    await create_account(accounts, "ann@example.com", "s3cret-pass", "Ann", None)
    with pytest.raises(AccountExists):
        await create_account(accounts, "ANN@example.com", "other-pass", "Ann", None)
    assert len(accounts.rows) == 1 and len(accounts.published) == 1


async def test_authenticate(accounts: FakeAccounts) -> None:
    user_id = await create_account(accounts, "ann@example.com", "s3cret-pass", "Ann", None)
    account = await authenticate(accounts, "ANN@example.com", "s3cret-pass")
    assert account is not None and account.user_id == user_id and account.role == "user"
    assert await authenticate(accounts, "ann@example.com", "wrong-pass") is None
    assert await authenticate(accounts, "bob@example.com", "not-a-real-password") is None


async def test_ensure_admin_creates_then_keeps_the_configured_password(accounts: FakeAccounts) -> None:
    await ensure_admin(accounts, "admin@tinysaga.local", "first-pass")
    [row] = accounts.rows.values()
    assert row["role"] == "admin" and row["name"] == "Administrator"
    assert [e.eventName for e in accounts.published] == [ev.USER_REGISTERED]
    row["role"] = "user"
    await ensure_admin(accounts, "admin@tinysaga.local", "first-pass")
    assert row["role"] == "admin" and accounts_module.hasher.verify(row["password_hash"], "first-pass")
    await ensure_admin(accounts, "admin@tinysaga.local", "second-pass")
    assert accounts_module.hasher.verify(row["password_hash"], "second-pass")
    assert len(accounts.rows) == 1 and len(accounts.published) == 1


async def test_hashing_runs_off_the_event_loop(accounts: FakeAccounts, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 on the event loop stalled the service's health checks during a burst of sign-ups (the
    gateway then took Auth out of its backend): hashing and verifying run on a worker thread."""
    import threading

    threads: list[threading.Thread] = []
    real = accounts_module.hasher

    class Recording:
        def hash(self, password: str) -> str:
            threads.append(threading.current_thread())
            return real.hash(password)

        def verify(self, password_hash: str, password: str) -> bool:
            threads.append(threading.current_thread())
            return real.verify(password_hash, password)

    monkeypatch.setattr(accounts_module, "hasher", Recording())
    await create_account(accounts, "bea@example.com", "s3cret-pass", "Bea", None)
    assert await authenticate(accounts, "bea@example.com", "s3cret-pass") is not None
    assert len(threads) == 2 and threading.main_thread() not in threads
