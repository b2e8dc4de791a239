"""What Auth does with accounts, for its routes and at start-up (it consumes no events): register
one with its USER_REGISTERED, check a password, keep the admin account as configured."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tinysaga.auth.domain import Account
from tinysaga.auth.repository import AccountExists
from tinysaga.contracts.events import USER_REGISTERED, Event, make_event

hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = hasher.hash("not-a-real-password")
# Argon2 takes tens of milliseconds of CPU (and 64 MiB) per hash: done on the event loop, a burst
# of sign-ups stalled the service's health checks until the gateway took it out of its backend
# (503 for everyone). One worker thread keeps the loop free and the memory to one hash at a time.
_HASHING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")


async def _hash(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_HASHING, hasher.hash, password)


async def _verify(password_hash: str, password: str) -> None:
    """Raises VerificationError (or InvalidHashError) when the password is not the hash's."""
    await asyncio.get_running_loop().run_in_executor(_HASHING, hasher.verify, password_hash, password)


class Accounts(Protocol):
    """What these need of the repository (`AccountRepository`)."""

    async def create(
        self,
        user_id: uuid.UUID,
        email: str,
        password_hash: str,
        name: str,
        phone: str | None,
        role: str,
        registered: Event,
    ) -> None: ...
    async def by_email(self, email: str) -> Any: ...
    async def reset_admin(self, user_id: uuid.UUID, password_hash: str) -> None: ...
    async def make_admin(self, user_id: uuid.UUID) -> None: ...


async def create_account(
    accounts: Accounts, email: str, password: str, name: str, phone: str | None, role: str = "user"
) -> uuid.UUID:
    """The account and its USER_REGISTERED event (the wallet service opens the wallet, Notification
    keeps the contact); AccountExists when the email is taken."""
    user_id = uuid.uuid4()
    registered = make_event(
        USER_REGISTERED, correlation_id=str(user_id), userId=str(user_id), email=email, name=name, phone=phone
    )
    await accounts.create(user_id, email, await _hash(password), name, phone, role, registered)
    return user_id


async def authenticate(accounts: Accounts, email: str, password: str) -> Account | None:
    """The account whose email and password these are, else None (in the same time either way)."""
    row = await accounts.by_email(email)
    try:
        await _verify(row["password_hash"] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    return Account(row["user_id"], row["email"], row["password_hash"], row["name"], row["phone"], row["role"])


async def ensure_admin(accounts: Accounts, email: str, password: str) -> None:
    """The admin account from settings exists, with the configured password and the admin role."""
    row = await accounts.by_email(email)
    if row is None:
        try:
            await create_account(accounts, email, password, "Administrator", None, role="admin")
        except AccountExists:
            pass  # another replica created it first
        return
    try:
        await _verify(row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        await accounts.reset_admin(row["user_id"], await _hash(password))
    await accounts.make_admin(row["user_id"])
