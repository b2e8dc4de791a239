"""Operator commands on a running stack: `audit` (SPEC section 4)."""
