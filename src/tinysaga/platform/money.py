"""Money: exact decimals with at most 2 places, never binary floats."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field

Amount = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2, allow_inf_nan=False)]
Price = Annotated[Decimal, Field(gt=0, le=Decimal("1000000"), max_digits=12, decimal_places=2, allow_inf_nan=False)]

CENT = Decimal("0.01")


def money(value: Decimal | int | str) -> Decimal:
    return Decimal(value).quantize(CENT)


def as_number(value: Decimal | None) -> float | None:
    """For JSON output: a 2-place decimal prints exactly as a JSON number (79.99 stays 79.99)."""
    return None if value is None else float(value)
