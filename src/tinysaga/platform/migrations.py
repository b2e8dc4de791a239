"""Plain-SQL migrations: `<service>/migrations/NNNN_name.sql`, applied in order, each once, each in
its own transaction, recorded in `schema_migrations`. An advisory lock makes concurrent runs safe."""

from __future__ import annotations

from importlib import resources

import asyncpg

_LOCK_KEY = 724_211_001


def _files(package: str) -> list[tuple[str, str]]:
    folder = resources.files(package) / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text()) for p in files]


def migration_files(service: str) -> list[tuple[str, str]]:
    """The platform's tables (outbox, processed events) first, then the service's own."""
    platform = [(f"platform/{n}", sql) for n, sql in _files("tinysaga.platform")]
    return platform + _files(f"tinysaga.{service}")


async def apply_migrations(dsn: str, service: str) -> list[str]:
    applied: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migration_files(service):
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations(name) VALUES ($1)", name)
            applied.append(name)
    finally:
        await conn.close()
    return applied
