"""An experiment's live results over HTTP: the figures of `starter.py report` (`lab.live`,
`lab.figures`) as JSON, for the desk's supervisor view and the platform's dashboards.

Read from the database, not from workflows. The figures are computed on each request (a
bootstrap of the experiment's loans: about a second per 50,000 loans), in a thread so the
event loop keeps serving. Money is a decimal string beside its currency; shares are fractions.
The costs are the default price list (`lab.costs.CostTable`): the same for every caller.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from api.auth import Principal, allow
from api.problems import ApiError, problem_responses
from api.state import ApiState, State, in_thread
from lab.figures import ArmFigures, Figures
from lab.live import live_figures

router = APIRouter(prefix="/v1", tags=["experiments"])

Reader = Annotated[Principal, allow("supervisor", "platform", "auditor")]
Name = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="the experiment's name")]


class Interval(BaseModel):
    low: float
    high: float


class ArmReport(BaseModel):
    """One arm (strategy) of one segment ("all": every segment) in one currency."""

    currency: str
    segment: str
    arm: str
    policies: list[str]
    label: str
    loans: int
    too_few_loans: bool = Field(description="fewer loans than the report needs to say anything")
    days: int
    handover_balance: str
    recovered: str
    recovery_rate: float | None
    recovery_rate_ci: Interval | None
    cured: int
    cure_rate: float | None
    cure_rate_ci: Interval | None
    cost: str
    cost_per_unit: float | None = Field(description="cost to collect per unit recovered")
    cost_per_unit_ci: Interval | None
    recovery_curve: list[float | None] = Field(description="share of the hand-over balance recovered by day")
    roll_rates: dict[str, dict[str, float | None]]
    contacts: dict[str, int]
    contacts_per_loan: dict[str, float]
    guard: dict[str, int] = Field(description='deferrals and refusals by "<verdict>:<rule id>"')
    promises_made: int
    promises_kept: int
    promises_broken: int
    plans: int
    plans_kept: int
    plans_broken: int
    settlements: int
    hardships: int
    disputes: int
    contacts_after_refusal: int = Field(description="contacts after an opt-out or a stop: must be 0")
    outcomes: dict[str, int]


class Difference(BaseModel):
    """Challenger minus champion on one figure, with its 95 % bootstrap interval."""

    currency: str
    segment: str
    metric: str
    champion: str
    challenger: str
    difference: float | None
    ci: Interval | None
    significant: bool | None = Field(description="the interval excludes 0; null: too few loans to say")
    ahead: str | None
    sentence: str


class ExperimentReport(BaseModel):
    experiment: str
    start: date | None = Field(description="loans handed over from this date (UTC)")
    end: date | None
    as_of: datetime
    loans: int
    summary: list[str] = Field(description="the report's summary sentences")
    warnings: list[str]
    arms: list[ArmReport]
    differences: list[Difference]


def _interval(ci: tuple[float, float] | None) -> Interval | None:
    return None if ci is None else Interval(low=ci[0], high=ci[1])


def arm_report(a: ArmFigures) -> ArmReport:
    return ArmReport(
        currency=a.currency,
        segment=a.segment,
        arm=a.arm,
        policies=list(a.policies),
        label=a.label,
        loans=a.loans,
        too_few_loans=a.small,
        days=a.days,
        handover_balance=str(a.handover_balance),
        recovered=str(a.recovered),
        recovery_rate=a.recovery_rate,
        recovery_rate_ci=_interval(a.ci.get("recovery_rate")),
        cured=a.cured,
        cure_rate=a.cure_rate,
        cure_rate_ci=_interval(a.ci.get("cure_rate")),
        cost=str(a.cost),
        cost_per_unit=a.cost_per_unit,
        cost_per_unit_ci=_interval(a.ci.get("cost_per_unit")),
        recovery_curve=list(a.curve),
        roll_rates=a.roll_rates,
        contacts=a.contacts,
        contacts_per_loan=a.contacts_per_loan,
        guard=a.guard,
        promises_made=a.promises_made,
        promises_kept=a.promises_kept,
        promises_broken=a.promises_broken,
        plans=a.plans,
        plans_kept=a.plans_kept,
        plans_broken=a.plans_broken,
        settlements=a.settlements,
        hardships=a.hardships,
        disputes=a.disputes,
        contacts_after_refusal=a.contacts_after_refusal,
        outcomes=a.outcomes,
    )


def report_of(name: str, start: date | None, end: date | None, as_of: datetime, figures: Figures) -> ExperimentReport:
    return ExperimentReport(
        experiment=name,
        start=start,
        end=end,
        as_of=as_of,
        loans=figures.loans,
        summary=[c.sentence for c in figures.comparisons if c.segment == "all"],
        warnings=figures.warnings,
        arms=[arm_report(a) for a in figures.arms],
        differences=[
            Difference(
                currency=c.currency,
                segment=c.segment,
                metric=c.metric,
                champion=c.champion,
                challenger=c.challenger,
                difference=c.difference,
                ci=_interval(c.ci),
                significant=c.significant,
                ahead=c.ahead,
                sentence=c.sentence,
            )
            for c in figures.comparisons
        ],
    )


def experiment_figures(state: ApiState, name: str, start: date | None, end: date | None) -> tuple[datetime, Figures]:
    """The live figures (blocking: call it in a thread). Raises ApiError 404 without loans."""
    found = live_figures(state.engine, name, start=start, end=end, now=datetime.now(UTC))
    if found is None:
        raise ApiError(404, f"experiment {name!r} has no loans handed over in the period")
    return found


@router.get(
    "/experiments/{name}/report",
    response_model=ExperimentReport,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def experiment_report(
    state: State,
    principal: Reader,
    name: Name,
    start: Annotated[date | None, Query(alias="from", description="loans handed over from YYYY-MM-DD (UTC)")] = None,
    end: Annotated[date | None, Query(alias="to", description="... up to YYYY-MM-DD; figures as of its end")] = None,
) -> ExperimentReport:
    """The experiment's figures per segment and arm, the challenger-minus-champion differences
    with 95 % bootstrap intervals, and the summary sentences (docs/strategy.md, "Reading the
    report"). 404 when no loan of the experiment was handed over in the period."""
    if start is not None and end is not None and start > end:
        raise ApiError(422, "`from` is after `to`", field="query.from")
    as_of, figures = await in_thread(experiment_figures, state, name, start, end)
    return report_of(name, start, end, as_of, figures)
