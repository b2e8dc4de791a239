"""Inventory rules, pure."""

from __future__ import annotations

MAX_STOCK = 1_000_000

# reservation statuses
RESERVED = "RESERVED"
REJECTED = "REJECTED"
RELEASED = "RELEASED"
CANCELLED = "CANCELLED"
INVENTORY_NOT_AVAILABLE = "INVENTORY NOT AVAILABLE"
