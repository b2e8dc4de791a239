"""Database pools (asyncpg). Transactions, handled event ids and the outbox: `platform.uow`."""

from __future__ import annotations

import asyncpg

from tinysaga.platform.secrets import database_dsn
from tinysaga.platform.settings import Settings


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Pool connections never carry session state (LISTEN, advisory locks and SET live on
    dedicated connections), so the default reset query (RESET ALL; CLOSE ALL; UNLISTEN *; advisory
    unlock), one more round trip on every release, is skipped. asyncpg still rolls back a
    transaction left open."""


async def create_pool(settings: Settings, service: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        database_dsn(settings, service), min_size=min_size, max_size=max_size, command_timeout=30, reset=_keep_session
    )
