"""The currency table (`models.iso4217`) agrees with ISO 4217 as `pycountry` carries it, and the
money types accept exactly those codes with their decimals."""

from __future__ import annotations

from decimal import Decimal

import pycountry
import pytest
from pydantic import TypeAdapter, ValidationError

from models.iso4217 import MINOR_UNITS, NO_MINOR_UNITS
from models.money import Currency, minor_units, quantize

CURRENCY = TypeAdapter(Currency)


def test_the_table_holds_every_iso_4217_code_in_use_and_nothing_else() -> None:
    iso = {c.alpha_3 for c in pycountry.currencies}
    assert set(MINOR_UNITS) == iso - NO_MINOR_UNITS
    assert iso >= NO_MINOR_UNITS


@pytest.mark.parametrize(("code", "decimals"), [("CNY", 2), ("JPY", 0), ("KWD", 3), ("OMR", 3), ("CLF", 4), ("XOF", 0)])
def test_minor_units(code: str, decimals: int) -> None:
    assert minor_units(code) == decimals
    assert quantize(Decimal("1.23456"), code).as_tuple().exponent == -decimals


@pytest.mark.parametrize("code", ["XYZ", "ABC", "XAU", "XXX", "cny", "CN", "CNYY"])
def test_an_unknown_or_metal_code_is_refused(code: str) -> None:
    with pytest.raises(ValidationError):
        CURRENCY.validate_python(code)


def test_a_code_in_use_is_accepted() -> None:
    assert CURRENCY.validate_python("EUR") == "EUR"
