"""Secrets created once per state dir by `tiny-saga up`: the token signing key pair, the
gateway-to-service secret and one database password per service."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tinysaga.platform.settings import Settings

SERVICES_WITH_DB = ("auth", "order", "payment", "wallet", "inventory", "notification")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_secrets(settings: Settings) -> None:
    d = settings.secrets_dir
    d.mkdir(parents=True, exist_ok=True)
    priv, pub = d / "jwt_private.pem", d / "jwt_public.pem"
    if not priv.exists() or not pub.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(
            priv,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        pub.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        pub.chmod(0o644)
    if not (d / "internal_secret").exists():
        _write_private(d / "internal_secret", secrets.token_urlsafe(32).encode())
    if not (d / "db.json").exists():
        pw = {s: secrets.token_urlsafe(18) for s in SERVICES_WITH_DB}
        pw["superuser"] = secrets.token_urlsafe(18)
        _write_private(d / "db.json", json.dumps(pw).encode())


def internal_secret(settings: Settings) -> str:
    return (settings.secrets_dir / "internal_secret").read_text().strip()


def db_passwords(settings: Settings) -> dict[str, str]:
    """From `db.json` (the local stack); else, as on Kubernetes, one file per role,
    `db/<service>/password` (the role's Secret mounted there, only the ones the process needs)."""
    f = settings.secrets_dir / "db.json"
    if f.exists() or not (settings.secrets_dir / "db").is_dir():
        return json.loads(f.read_text())
    return {p.parent.name: p.read_text().strip() for p in (settings.secrets_dir / "db").glob("*/password")}


def database_dsn(settings: Settings, service: str) -> str:
    pw = db_passwords(settings)[service]
    return f"postgresql://tinysaga_{service}:{pw}@{settings.pg_host}:{settings.pg_port}/tinysaga_{service}"


def superuser_dsn(settings: Settings, db: str = "postgres") -> str:
    pw = db_passwords(settings)["superuser"]
    return f"postgresql://tinysaga:{pw}@{settings.pg_host}:{settings.pg_port}/{db}"
