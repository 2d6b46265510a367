"""Money helpers: amounts are Decimal with an ISO 4217 currency, never float.

Rounding is explicit and happens in one place, so that a fee computed in a workflow and
a figure printed on a letter can never disagree by a cent.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from models.iso4217 import MINOR_UNITS

ZERO = Decimal(0)


def minor_units(currency: str) -> int:
    """Number of decimals used by `currency` (ISO 4217; an unknown code: two, though `Currency`
    lets none through)."""
    return MINOR_UNITS.get(currency, 2)


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round `amount` half-up to the currency's minor unit."""
    return amount.quantize(_unit(currency), rounding=ROUND_HALF_UP)


@lru_cache(maxsize=512)
def _unit(currency: str) -> Decimal:
    """The currency's smallest unit (0.01 for CNY), computed once per currency."""
    return Decimal(1).scaleb(-minor_units(currency))


_MAX_AMOUNT = Decimal("1e15")


def _check_currency(code: str) -> str:
    if re.fullmatch(r"[A-Z]{3}", code) is None:
        raise ValueError(f"currency must be an ISO 4217 code like 'CNY', got {code!r}")
    if code not in MINOR_UNITS:
        raise ValueError(f"currency {code!r} is not an ISO 4217 currency in use")
    return code


def _check_range(value: Decimal) -> Decimal:
    if not value.is_finite() or abs(value) >= _MAX_AMOUNT:
        raise ValueError(f"amount {value} is out of range (finite, below {_MAX_AMOUNT:,.0f})")
    return value


def _reject_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError("money amounts must be Decimal or a decimal string, never float")
    return value


Currency = Annotated[str, AfterValidator(_check_currency)]
"""An ISO 4217 currency code in use (`models.iso4217`), e.g. CNY, USD, JPY."""

Amount = Annotated[Decimal, BeforeValidator(_reject_float), AfterValidator(_check_range)]
"""A money amount. Pydantic writes Decimal to JSON as a string, so no reader sees a float."""
