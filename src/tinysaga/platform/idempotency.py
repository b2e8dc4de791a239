"""Idempotency-Key handling shared by the routes that create things."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from tinysaga.platform.web import Problem

MAX_KEY = 200


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise Problem(
            422,
            "Unprocessable Content",
            "Idempotency-Key must be 1..200 printable characters",
            errors=[{"field": "Idempotency-Key", "message": "invalid header value", "type": "value_error"}],
        )
    return key


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def reused_with_other_body() -> Problem:
    return Problem(
        422,
        "Unprocessable Content",
        "this Idempotency-Key was used with a different request body",
        errors=[{"field": "Idempotency-Key", "message": "reused with another body", "type": "idempotency"}],
    )
