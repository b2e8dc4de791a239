"""Identifier formats every service agrees on."""

from __future__ import annotations

import os
import re
import time
import uuid

# A product id: letters, digits, '.', '_' or '-', starting with a letter or digit, up to 64 characters.
PRODUCT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def is_product_id(value: str) -> bool:
    return bool(PRODUCT_ID_RE.match(value)) and value not in (".", "..")


def new_id() -> uuid.UUID:
    """A new UUID of version 7 (RFC 9562): the Unix time in milliseconds, then 74 random bits. Ids
    made later sort later, so the rows they key are added at the right edge of their indexes."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | (rand & (2**62 - 1))
    return uuid.UUID(int=value)
