"""The private PostgreSQL cluster: initdb into the state dir, its own port, one database and one
role per service, migrations applied. PostgreSQL refuses to run as root, so as root every server
command runs as the `postgres` user and the data dir belongs to it."""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import asyncpg

from tinysaga.platform.migrations import apply_migrations
from tinysaga.platform.secrets import SERVICES_WITH_DB, database_dsn, db_passwords, superuser_dsn
from tinysaga.platform.settings import REPO_ROOT, Settings


class SetupError(RuntimeError):
    """Something the stack needs cannot be set up; the message says what."""


def pg_bin(name: str) -> str:
    for pattern in ("/usr/lib/postgresql/*/bin/" + name,):
        found = sorted(glob.glob(pattern))
        if found:
            return found[-1]
    path = shutil.which(name)
    if path:
        return path
    raise SetupError(f"PostgreSQL server binary '{name}' not found: install Debian's postgresql-15 package")


def _as_pg_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def pg_root(settings: Settings) -> Path:
    """Where the cluster lives: `<home>/pg`, unless the `postgres` user (which runs the server when
    we are root) cannot reach that folder, e.g. a clone under /root: then a folder of its own under
    /var/lib/tinysaga, named after the state dir so that every command finds the same one."""
    root = settings.home / "pg"
    if os.geteuid() != 0:
        return root
    probe = settings.home
    while not probe.exists():
        probe = probe.parent
    ok = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(probe)], capture_output=True)
    if ok.returncode == 0:
        return root
    digest = hashlib.sha256(str(settings.home.resolve()).encode()).hexdigest()[:16]
    return Path("/var/lib/tinysaga") / digest / "pg"


def data_dir(settings: Settings) -> Path:
    return pg_root(settings) / "data"


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


def ensure_cluster(settings: Settings) -> None:
    data = data_dir(settings)
    if (data / "PG_VERSION").exists():
        return
    root = pg_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    (root / "run").mkdir(exist_ok=True)
    pwfile = root / "pwfile"
    pwfile.write_text(db_passwords(settings)["superuser"] + "\n")
    _chown_to_postgres(root)
    try:
        subprocess.run(
            _as_pg_user(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "tinysaga",
                    "--pwfile",
                    str(pwfile),
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as e:
        raise SetupError(f"initdb failed: {e.stderr.strip() or e.stdout.strip()}") from e
    finally:
        pwfile.unlink(missing_ok=True)
    conf = (REPO_ROOT / "deploy" / "postgres" / "postgresql.conf").read_text()
    with open(data / "postgresql.conf", "a") as f:
        f.write("\n# --- Tiny-Saga ---\n")
        f.write(conf)
        f.write(f"\nport = {settings.pg_port}\nunix_socket_directories = '{root / 'run'}'\n")


def is_running(settings: Settings) -> bool:
    data = data_dir(settings)
    if not (data / "PG_VERSION").exists():
        return False
    r = subprocess.run(_as_pg_user([pg_bin("pg_ctl"), "-D", str(data), "status"]), capture_output=True, text=True)
    return r.returncode == 0


def pid(settings: Settings) -> int | None:
    f = data_dir(settings) / "postmaster.pid"
    try:
        return int(f.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def start(settings: Settings) -> None:
    if is_running(settings):
        return
    if _port_taken(settings.pg_port):
        raise SetupError(
            f"port {settings.pg_port} for PostgreSQL is taken by another program (set TINYSAGA_PG_PORT to another port)"
        )
    log = pg_root(settings) / "postgres.log"  # where the postgres user can write
    log.touch()
    _chown_to_postgres(log)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    link = settings.logs_dir / "postgres.log"
    if link != log and not link.is_symlink():
        link.unlink(missing_ok=True)
        link.symlink_to(log)
    r = subprocess.run(
        _as_pg_user([pg_bin("pg_ctl"), "-D", str(data_dir(settings)), "-l", str(log), "-w", "-t", "60", "start"]),
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise SetupError(f"PostgreSQL did not start: {r.stderr.strip()}\n{tail}")


def stop(settings: Settings) -> None:
    if is_running(settings):
        subprocess.run(
            _as_pg_user([pg_bin("pg_ctl"), "-D", str(data_dir(settings)), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def _provision(settings: Settings) -> None:
    pw = db_passwords(settings)
    conn = await asyncpg.connect(superuser_dsn(settings))
    try:
        for svc in SERVICES_WITH_DB:
            role, db = f"tinysaga_{svc}", f"tinysaga_{svc}"
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname=$1", role)
            password = pw[svc].replace("'", "''")
            if not exists:
                await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", db):
                await conn.execute(f"CREATE DATABASE {db} OWNER {role}")
                await conn.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
    finally:
        await conn.close()
    for svc in SERVICES_WITH_DB:
        await apply_migrations(database_dsn(settings, svc), svc)


def provision(settings: Settings) -> None:
    asyncio.run(_provision(settings))
