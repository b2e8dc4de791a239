"""Operator commands on a running stack: `audit` (SPEC section 4) and `chaos` (faults, then the audit)."""
