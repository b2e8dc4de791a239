"""Inventory rules, pure."""

from __future__ import annotations

import re

PRODUCT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_STOCK = 1_000_000

# reservation statuses
RESERVED = "RESERVED"
REJECTED = "REJECTED"
RELEASED = "RELEASED"
CANCELLED = "CANCELLED"
INVENTORY_NOT_AVAILABLE = "INVENTORY NOT AVAILABLE"
