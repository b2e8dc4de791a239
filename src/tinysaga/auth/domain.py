"""Accounts and tokens: pure rules, no I/O."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$")
PHONE_RE = re.compile(r"^\+?[0-9 ()-]{6,20}$")
MIN_PASSWORD = 8


@dataclass(frozen=True)
class Account:
    user_id: uuid.UUID
    email: str
    password_hash: str
    name: str
    phone: str | None
    role: str


def issue_token(account: Account, private_key_pem: str, issuer: str, ttl_seconds: int) -> str:
    now = datetime.now(UTC)
    claims = {
        "iss": issuer,
        "sub": str(account.user_id),
        "role": account.role,
        "email": account.email,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, private_key_pem, algorithm="RS256")
