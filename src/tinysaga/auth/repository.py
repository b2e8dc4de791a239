"""All of Auth's SQL: the accounts (users), and the USER_REGISTERED that goes with a new one."""

from __future__ import annotations

import uuid

import asyncpg

from tinysaga.contracts.events import Event
from tinysaga.platform.uow import PgUnitOfWork


class AccountExists(Exception):
    """An account with this email (in any case) exists already."""


class AccountRepository:
    """Built on the pool; a new account stages its event on the user topic (`user_topic`)."""

    def __init__(self, pool: asyncpg.Pool, user_topic: str) -> None:
        self.pool = pool
        self.user_topic = user_topic

    async def create(
        self,
        user_id: uuid.UUID,
        email: str,
        password_hash: str,
        name: str,
        phone: str | None,
        role: str,
        registered: Event,
    ) -> None:
        """The account and its USER_REGISTERED, in one transaction; AccountExists when the email is taken."""
        async with PgUnitOfWork.begin(self.pool, self.user_topic) as uow:
            try:
                await uow.conn.execute(
                    "INSERT INTO users(user_id, email, password_hash, name, phone, role)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    user_id,
                    email,
                    password_hash,
                    name,
                    phone,
                    role,
                )
            except asyncpg.UniqueViolationError as e:
                raise AccountExists(email) from e
            await uow.stage(registered)

    async def by_email(self, email: str) -> asyncpg.Record | None:
        """The account of an email, in any case."""
        return await self.pool.fetchrow("SELECT * FROM users WHERE lower(email) = lower($1)", email)

    async def by_id(self, user_id: uuid.UUID) -> asyncpg.Record | None:
        return await self.pool.fetchrow("SELECT * FROM users WHERE user_id=$1", user_id)

    async def reset_admin(self, user_id: uuid.UUID, password_hash: str) -> None:
        """A new password hash, and the admin role."""
        await self.pool.execute(
            "UPDATE users SET password_hash=$2, role='admin' WHERE user_id=$1", user_id, password_hash
        )

    async def make_admin(self, user_id: uuid.UUID) -> None:
        await self.pool.execute("UPDATE users SET role='admin' WHERE user_id=$1", user_id)
