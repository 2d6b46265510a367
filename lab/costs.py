"""What each collection action costs, from the scenario file's `[costs]` table (the simulator)
or a cost file (the live report): one price list, so both reports cost the same actions alike.

    [costs]
    currency = "CNY"
    sms = "0.05"                  # per message sent
    email = "0.01"
    letter = "8.00"
    call_minute = "1.20"          # collector's time on the phone
    minutes_answered = "6"        # a call that reached the borrower
    minutes_unanswered = "1"      # no answer, wrong number (dialling, voicemail)
    visit = "150.00"              # a field visit
    agency_commission = "0.20"    # share of what the agency recovers while it holds the account
    court = "800.00"              # filing a claim
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.money import Currency


class CostTable(BaseModel):
    """Prices per action in one currency (a loan in another currency is not costed: the
    report says so rather than mixing currencies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: Currency = "CNY"
    sms: Decimal = Field(default=Decimal("0.05"), ge=0)
    email: Decimal = Field(default=Decimal("0.01"), ge=0)
    letter: Decimal = Field(default=Decimal("8.00"), ge=0)
    call_minute: Decimal = Field(default=Decimal("1.20"), ge=0)
    minutes_answered: Decimal = Field(default=Decimal(6), ge=0)
    minutes_unanswered: Decimal = Field(default=Decimal(1), ge=0)
    visit: Decimal = Field(default=Decimal("150.00"), ge=0)
    agency_commission: Decimal = Field(default=Decimal("0.20"), ge=0, le=1)
    court: Decimal = Field(default=Decimal("800.00"), ge=0)

    def message(self, channel: str) -> Decimal:
        """The price of one message on `channel` (sms, email, letter)."""
        price: Decimal = getattr(self, channel)
        return price

    def call(self, answered: bool) -> tuple[Decimal, Decimal]:
        """(minutes, price) of one call attempt."""
        minutes = self.minutes_answered if answered else self.minutes_unanswered
        return minutes, minutes * self.call_minute


def parse_costs(data: dict[str, Any], source: str) -> CostTable:
    """A `[costs]` table, validated; `source` names the file in the error."""
    try:
        return CostTable.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"{source} [costs]: {exc}") from exc
