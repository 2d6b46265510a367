"""The HTTP API's own small rules, without a server: which refusals of a payment are conflicts
(409) rather than bad input (422), read off the loan's own messages (`models.payment`); the DPD
bands a DPD range overlaps; request fingerprints."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from api.idempotency import fingerprint
from api.routes.loans import _bands
from api.routes.payments import refusal_status
from models import Payment, PaymentRejected, Stage
from models.payment import check_payment


def refusal(payment: Payment, *, seen: tuple[str, ...] = (), closed: Stage | None = None) -> str:
    with pytest.raises(PaymentRejected) as info:
        check_payment(payment, "CNY", list(seen), closed)
    return str(info.value)


def payment(amount: str = "10.00", currency: str = "CNY") -> Payment:
    return Payment(payment_id="p1", amount=Decimal(amount), currency=currency, paid_at=datetime.now(UTC))


def test_a_closed_loan_or_a_payment_applied_before_is_a_conflict() -> None:
    assert refusal_status(refusal(payment(), closed=Stage.paid)) == 409
    assert refusal_status(refusal(payment(), seen=("p1",))) == 409


def test_what_is_wrong_with_the_payment_itself_is_422() -> None:
    assert refusal_status(refusal(payment("0"))) == 422
    assert refusal_status(refusal(payment(currency="USD"))) == 422
    assert refusal_status(refusal(payment("1.001"))) == 422


@pytest.mark.parametrize(
    ("low", "high", "bands"),
    [
        (0, 29, ["0-29"]),
        (30, 59, ["30-59"]),
        (25, 35, ["30-59", "0-29"]),
        (100, None, ["180+", "120-179", "90-119"]),
        (200, 300, ["180+"]),
        (0, None, ["180+", "120-179", "90-119", "60-89", "30-59", "0-29"]),
    ],
)
def test_a_dpd_range_is_looked_up_in_the_bands_it_overlaps(low: int, high: int | None, bands: list[str]) -> None:
    assert _bands(low, high) == bands


def test_a_fingerprint_ignores_key_order() -> None:
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})
