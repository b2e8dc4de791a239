"""Identifier formats every service agrees on."""

from __future__ import annotations

import re

# A product id: letters, digits, '.', '_' or '-', starting with a letter or digit, up to 64 characters.
PRODUCT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def is_product_id(value: str) -> bool:
    return bool(PRODUCT_ID_RE.match(value)) and value not in (".", "..")
