"""The loan as the lending platform hands it over, and its balance during collection."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from models.money import ZERO, Amount, Currency, quantize

Language = Literal["zh", "en"]


class Stage(StrEnum):
    """Where a loan stands. The first three are DPD bands; the rest are how a loan ends."""

    early = "early"
    middle = "middle"
    late = "late"
    paid = "paid"
    settled = "settled"
    written_off = "written_off"
    dispute_upheld = "dispute_upheld"
    closed = "closed"

    @property
    def is_final(self) -> bool:
        """A final stage takes no more escalation (written-off loans still take payments)."""
        return self not in (Stage.early, Stage.middle, Stage.late)


class ThirdParty(BaseModel):
    """Someone who may be asked, only to locate an unreachable borrower; never told of the debt."""

    model_config = ConfigDict(frozen=True)

    name: str = ""
    phone: str = Field(min_length=1)
    relation: str = ""


class Borrower(BaseModel):
    """The person who owes; contact details are personal data and stay out of logs."""

    model_config = ConfigDict(frozen=True)

    borrower_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    phone: str = ""
    email: str = ""
    address: str = ""
    timezone: str = "Asia/Shanghai"
    language: Language = "zh"
    third_parties: list[ThirdParty] = []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


class Balance(BaseModel):
    """Outstanding amounts by component; `total` is derived, never stored apart."""

    model_config = ConfigDict(frozen=True)

    principal: Amount = ZERO
    interest: Amount = ZERO
    fees: Amount = ZERO
    penalties: Amount = ZERO

    @computed_field  # type: ignore[prop-decorator]  # mypy rejects decorated properties; pydantic's documented workaround
    @property
    def total(self) -> Decimal:
        return self.principal + self.interest + self.fees + self.penalties

    def component(self, name: str) -> Decimal:
        return getattr(self, name)

    def with_component(self, name: str, value: Decimal) -> Balance:
        return self.model_copy(update={name: value})


COMPONENTS: tuple[str, ...] = ("penalties", "fees", "interest", "principal")
"""Balance components a payment can be allocated to."""


class OverdueLoan(BaseModel):
    """Snapshot of an overdue loan when collection starts."""

    model_config = ConfigDict(frozen=True)

    loan_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._:-]+$")
    borrower: Borrower
    currency: Currency
    principal: Amount
    interest: Amount = ZERO
    fees: Amount = ZERO
    due_date: date
    penalties: Amount = ZERO
    product: str = "consumer"
    # What the platform knows of the borrower's record, for screening at hand-over
    # (`models.segmentation`); optional, so loans handed over before screening still parse.
    earlier_delinquencies: int = Field(default=0, ge=0, le=10_000)
    """How many times this borrower was delinquent before (on any loan of the platform)."""
    last_payment_date: date | None = None
    """The borrower's last payment on this loan (None: never paid, or not known)."""
    hardship_flag: bool = False
    """The borrower told the platform of hardship (illness, job loss) before the hand-over."""

    @model_validator(mode="after")
    def _amounts_valid(self) -> OverdueLoan:
        for name in ("principal", "interest", "fees", "penalties"):
            value: Decimal = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must not be negative")
            if quantize(value, self.currency) != value:
                raise ValueError(f"{name} has more decimals than {self.currency} allows")
        if self.principal + self.interest + self.fees + self.penalties <= 0:
            raise ValueError("an overdue loan must owe something")
        return self

    def balance(self) -> Balance:
        return Balance(
            principal=self.principal,
            interest=self.interest,
            fees=self.fees,
            penalties=self.penalties,
        )
