"""Champion/challenger experiments (docs/strategy.md): start one from its TOML, pause, resume,
end it with a winner, list and read them. The platform and supervisors read; only the platform
changes them (a strategy change is the lender's decision, made by its platform's tooling; a
supervisor runs collectors, not strategies). The report of an experiment is another route
(`api/routes/experiment_reports.py`).

The body of `POST /v1/experiments` is the experiment's TOML text (`definition`), not a file
name: the API's caller need not have access to the server's folders, and the text is what is
stored and shown. The policies and scorecard it names must exist on the server."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Principal, allow
from api.problems import ApiError, problem_responses
from api.state import ApiState, State, in_thread
from models.experiment import NAME_PATTERN, POLICY_PATTERN
from ops import experiments

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])

Reader = Annotated[Principal, allow("platform", "supervisor")]
Changer = Annotated[Principal, allow("platform")]
Name = Annotated[str, Path(pattern=NAME_PATTERN, description="the experiment's name (its file's `name`)")]


class ExperimentIn(BaseModel):
    """An experiment to start: its TOML text (the format of strategies/experiments/*.toml)."""

    model_config = ConfigDict(extra="forbid")

    definition: str = Field(min_length=1, max_length=65_536, description="the experiment file's TOML text")


class EndIn(BaseModel):
    """The winner: an arm's name (`champion` or a challenger's) or a policy name; in `segment`
    only, or in every segment that has that arm (a policy name: every segment)."""

    model_config = ConfigDict(extra="forbid")

    winner: str = Field(pattern=POLICY_PATTERN)
    segment: str | None = Field(default=None, pattern=NAME_PATTERN)


class ExperimentOut(BaseModel):
    name: str
    status: str = Field(description="running, paused or ended")
    segmentation: str
    winners: dict[str, str] = Field(description="policy per segment chosen at the end (others: their champion)")
    started_at: datetime
    paused_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    definition: str


class ExperimentList(BaseModel):
    experiments: list[ExperimentOut]


def _call(fn: Any, *args: Any) -> ExperimentOut:
    """Run an ops call, its refusals as problems: a bad definition or winner 422 (naming the
    field), an unknown experiment 404, a state that does not allow it 409."""
    try:
        return ExperimentOut(**fn(*args))
    except experiments.ExperimentNotFound as exc:
        raise ApiError(404, str(exc).strip("'\"")) from exc
    except experiments.ExperimentConflict as exc:
        raise ApiError(409, str(exc)) from exc
    except experiments.DEFINITION_ERRORS as exc:
        raise ApiError(422, str(exc), field="body") from exc


@router.post("", status_code=201, response_model=ExperimentOut, responses=problem_responses(401, 403, 409, 422))
async def start_experiment(body: ExperimentIn, state: State, principal: Changer) -> ExperimentOut:
    """Start an experiment: new loans handed over with policy `auto` are split between its arms.
    Refused (409) while another experiment runs or is paused, or if the name was used before."""

    def run(st: ApiState) -> ExperimentOut:
        return _call(
            experiments.start,
            st.engine,
            body.definition,
            "body.definition",
        )

    result: ExperimentOut = await in_thread(run, state)
    return result


@router.get("", response_model=ExperimentList, responses=problem_responses(401, 403))
async def list_experiments(state: State, principal: Reader) -> ExperimentList:
    """Every experiment, newest first."""
    rows = await in_thread(experiments.list_all, state.engine)
    return ExperimentList(experiments=[ExperimentOut(**row) for row in rows])


@router.get("/{name}", response_model=ExperimentOut, responses=problem_responses(401, 403, 404, 422))
async def get_experiment(name: Name, state: State, principal: Reader) -> ExperimentOut:
    result: ExperimentOut = await in_thread(_call, experiments.get, state.engine, name)
    return result


@router.post("/{name}/pause", response_model=ExperimentOut, responses=problem_responses(401, 403, 404, 409, 422))
async def pause_experiment(name: Name, state: State, principal: Changer) -> ExperimentOut:
    """New loans get their segment's champion (not in the test) until it resumes."""
    result: ExperimentOut = await in_thread(_call, experiments.pause, state.engine, name)
    return result


@router.post("/{name}/resume", response_model=ExperimentOut, responses=problem_responses(401, 403, 404, 409, 422))
async def resume_experiment(name: Name, state: State, principal: Changer) -> ExperimentOut:
    result: ExperimentOut = await in_thread(_call, experiments.resume, state.engine, name)
    return result


@router.post("/{name}/end", response_model=ExperimentOut, responses=problem_responses(401, 403, 404, 422))
async def end_experiment(name: Name, body: EndIn, state: State, principal: Changer) -> ExperimentOut:
    """End it: new loans get the winner (arm "winner"); loans in flight keep their arm. Ending
    it again changes the winners named."""
    result: ExperimentOut = await in_thread(_call, experiments.end, state.engine, name, body.winner, body.segment)
    return result
