"""Collection policies: a strategy is data (a TOML file), validated here (`parse_policy`);
`infra.loaders.load_policy` reads the file.

A loan keeps the policy it started with (and its version hash) for its whole life, so a
changed file never disturbs loans already in flight.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import time
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.clock import PolicyClock
from models.loan import COMPONENTS
from models.money import Amount

MessageChannel = Literal["sms", "email", "letter"]


class Action(StrEnum):
    """What a ladder step does."""

    message = "message"  # SMS, e-mail or letter from a template
    call = "call"  # a phone task for a collector, outcome reported back
    field_visit = "field_visit"  # a visit task, outcome and recording reported back
    agency = "agency"  # hand the account to an outside agency for the agency period
    litigation = "litigation"  # file a court case


class FeeKind(StrEnum):
    """How a late fee is computed (`[late_fee] kind` in a policy file)."""

    flat = "flat"  # a fixed `amount` per period
    percent = "percent"  # `rate` of the overdue principal and interest
    none = "none"  # no late fees


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LadderStep(_Strict):
    """One rung of the escalation ladder, due at a number of days past due."""

    dpd: int = Field(ge=0)
    action: Action
    template: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")
    channels: list[MessageChannel] = []
    deadline_days: int | None = Field(default=None, ge=1)
    queue: str = "collectors"
    attempts: int = Field(default=1, ge=1, le=20)
    retry_after_hours: int = Field(default=24, ge=1)
    outcome_timeout_hours: int = Field(default=48, ge=1)
    products: list[str] | None = None
    min_outstanding: Amount | None = None

    @model_validator(mode="after")
    def _shape(self) -> LadderStep:
        if self.action is Action.message and not self.channels:
            raise ValueError("a message step needs at least one channel")
        if self.action is not Action.message and self.channels:
            raise ValueError(f"channels apply to message steps only, not {self.action}")
        return self

    @property
    def key(self) -> str:
        """Stable name of the step, used in idempotency keys and the timeline."""
        return f"{self.action}@{self.dpd}"


class StageBands(_Strict):
    """First DPD of each stage: early from `early`, middle from `middle`, late from `late`."""

    early: int = Field(default=1, ge=0)
    middle: int = 30
    late: int = 90

    @model_validator(mode="after")
    def _ordered(self) -> StageBands:
        if not self.early < self.middle < self.late:
            raise ValueError("stage bands must rise: early < middle < late")
        return self


class LateFee(_Strict):
    """Late-fee (penalty) rule: grace, amount, recurrence and a cap."""

    grace_days: int = Field(default=6, ge=0)
    kind: FeeKind = FeeKind.percent
    amount: Amount | None = Field(default=None, gt=0)
    rate: Decimal | None = Field(default=Decimal("0.05"), gt=0, le=1)
    every_days: int = Field(default=30, ge=0)
    max_periods: int | None = Field(default=None, ge=1)
    cap_ratio: Decimal = Field(default=Decimal("0.25"), ge=0, le=1)

    @model_validator(mode="after")
    def _amount_given(self) -> LateFee:
        if self.kind == FeeKind.flat and self.amount is None:
            raise ValueError("a flat late fee needs 'amount'")
        if self.kind == FeeKind.percent and self.rate is None:
            raise ValueError("a percent late fee needs 'rate'")
        return self

    @property
    def first_dpd(self) -> int:
        return self.grace_days + 1


class AgencyRule(_Strict):
    """Agency placement: which agency and for how long before automatic recall."""

    name: str = "default-agency"
    period_days: int = Field(default=60, ge=1)


class ContactWindow(_Strict):
    """When steps are sent, in the borrower's local time."""

    send_at: time = time(10, 0)
    start: time = time(8, 0)
    end: time = time(21, 0)

    @model_validator(mode="after")
    def _inside(self) -> ContactWindow:
        if not self.start <= self.send_at < self.end:
            raise ValueError("send_at must lie inside [start, end)")
        return self


class Lender(_Strict):
    """Who is collecting; every message names the lender and how to reach or dispute."""

    name: str = "Example Lending Co."
    phone: str = "400-000-0000"
    website: str = "https://lender.example"
    dispute_contact: str = "disputes@lender.example"


class PromiseRule(_Strict):
    """Promises to pay: how far ahead, how long a grace, how many may be broken."""

    max_days: int = Field(default=14, ge=1)
    grace_days: int = Field(default=2, ge=0)
    max_broken: int = Field(default=2, ge=1)


Frequency = Literal["weekly", "biweekly", "monthly"]


class PlanRule(_Strict):
    """Instalment plans: the limits a proposal is checked against."""

    max_instalments: int = Field(default=12, ge=1)
    min_instalment: Amount = Field(default=Decimal(100), ge=0)
    max_term_days: int = Field(default=365, ge=1)
    max_first_due_days: int = Field(default=30, ge=0)
    frequencies: list[Frequency] = ["weekly", "biweekly", "monthly"]
    waive_interest: bool = False
    grace_days: int = Field(default=3, ge=0)
    max_missed: int = Field(default=2, ge=1)
    reminder_days_before: int = Field(default=3, ge=0)
    max_renegotiations: int = Field(default=2, ge=0)


class SettlementRule(_Strict):
    """Discounted settlements: the largest discount per stage and the longest deadline."""

    max_days: int = Field(default=30, ge=1)
    max_discount: dict[str, Decimal] = {
        "early": Decimal(0),
        "middle": Decimal("0.10"),
        "late": Decimal("0.30"),
        "written_off": Decimal("0.50"),
    }

    @model_validator(mode="after")
    def _shares(self) -> SettlementRule:
        unknown = set(self.max_discount) - {"early", "middle", "late", "written_off"}
        if unknown:
            raise ValueError(f"max_discount stages must be early, middle, late or written_off, not {sorted(unknown)}")
        if any(not Decimal(0) <= v < 1 for v in self.max_discount.values()):
            raise ValueError("max_discount values are shares in [0, 1)")
        return self


class HardshipRule(_Strict):
    """Hardship: the breathing space (no contact, no fees) and who reviews the case."""

    breathing_space_days: int = Field(default=60, ge=1)
    review_queue: str = "hardship-review"
    review_template: str = "hardship_review"


StopRoute = Literal["legal_review", "write_off"]


class StopRule(_Strict):
    """Where a loan goes when collection must stop: per reason, legal review or write-off."""

    bankruptcy: StopRoute = "legal_review"
    death: StopRoute = "write_off"
    cease_contact: StopRoute = "legal_review"
    legal_queue: str = "legal"
    legal_template: str = "legal_review"


class Conduct(_Strict):
    """Which conduct rule set (rulesets/<name>.toml) guards every contact, and overrides
    merged into it (e.g. `overrides = { hours = { holidays = "cn" } }`)."""

    ruleset: str = "cn"
    overrides: dict[str, Any] = {}


class Policy(_Strict):
    """A whole collection strategy."""

    name: str = Field(min_length=1)
    description: str = ""
    version: str = ""
    lender: Lender = Lender()
    contact: ContactWindow = ContactWindow()
    stages: StageBands = StageBands()
    ladder: list[LadderStep] = Field(min_length=1)
    late_fee: LateFee = LateFee()
    allocation_order: list[str] = list(COMPONENTS)
    agency: AgencyRule = AgencyRule()
    write_off_dpd: int = Field(default=180, ge=1)
    recovery_days: int = Field(default=365, ge=0)
    promise: PromiseRule = PromiseRule()
    plan: PlanRule = PlanRule()
    settlement: SettlementRule = SettlementRule()
    hardship: HardshipRule = HardshipRule()
    stop: StopRule = StopRule()
    conduct: Conduct = Conduct()
    clock: PolicyClock = PolicyClock()
    """Test and demo policies only: compress business time (`models.clock`); default real time."""

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if sorted(self.allocation_order) != sorted(COMPONENTS):
            raise ValueError(f"allocation_order must list each of {', '.join(COMPONENTS)} once")
        keys = [step.key for step in self.ladder]
        if len(set(keys)) != len(keys):
            raise ValueError("two ladder steps share the same action and dpd")
        if [s.dpd for s in self.ladder] != sorted(s.dpd for s in self.ladder):
            raise ValueError("ladder steps must be in DPD order")
        late = [s.key for s in self.ladder if s.dpd >= self.write_off_dpd]
        if late:
            raise ValueError(f"steps at or after write_off_dpd: {', '.join(late)}")
        return self


WORKFLOW_TEMPLATES = frozenset({"paid_confirmation", "settled_confirmation", "plan_reminder", "locate_request"})
"""Templates the workflow sends whatever the ladder says."""


def template_names(policy: Policy) -> set[str]:
    """Every template a loan under `policy` may use."""
    return (
        {step.template for step in policy.ladder}
        | WORKFLOW_TEMPLATES
        | {
            policy.hardship.review_template,
            policy.stop.legal_template,
        }
    )


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the field."""


def policy_path(name: str, folder: Path) -> Path:
    """The file of policy `name`; names are plain words so no path escapes the folder."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise PolicyError(f"policy name {name!r} must be letters, digits, '-' or '_'")
    return folder / f"{name}.toml"


def parse_policy(text: str, source: str) -> Policy:
    """Validate TOML text as a policy; `source` names the file in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    data.setdefault("version", version)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(describe(source, exc)) from exc


def describe(source: str, exc: ValidationError) -> str:
    """A validation error as lines `<file>: field '<a.b>': <message>` (policies, scorecards and
    experiments name the file and field alike)."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{source}: field '{field}': {err['msg']}")
    return "\n".join(lines)
