"""Strategy assignment: which policy a screened loan gets, and champion/challenger experiments.

A strategy map (`strategies/map.toml`) sends each segment of a segmentation to its champion
policy. An experiment (`strategies/experiments/*.toml`) is a strategy map with a name and,
per segment, optional challengers with shares (e.g. 0.20: a fifth of the segment's new loans);
the champion gets the rest. Pure: no I/O, no clock, no randomness; the start activity
(`activities.start`) and the strategy lab (`lab/`) call `assign` with the same arguments and
get the same arm.

`assign` is deterministic from the experiment's name and the loan id
(`sha256("<experiment>:<loan id>")` modulo 10,000 against the cumulative shares), so a loan
never changes arm on a retry, a replay or a second hand-over, and two experiments split the
same loans independently. What the experiment's status does:

    running   the arm of the loan's bucket (champion or a challenger), in the test
    paused    the champion's policy, arm "champion", not in the test (`in_test=False`)
    ended     the segment's winner (named when it ended, else its champion), arm "winner",
              not in the test

The platform may still name a policy: the loan is screened all the same (segment, score) and
its arm is "explicit" (`explicit`). A loan keeps the arm it got for its whole life: ending an
experiment changes only what new loans get.
"""

from __future__ import annotations

import hashlib
import tomllib
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.policy import describe
from models.segmentation import Scorecard, Screening

BUCKETS = 10_000
"""A share is counted in ten-thousandths (0.2 = 2,000 buckets), so shares have at most 4 decimals."""

ExperimentStatus = Literal["running", "paused", "ended"]
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
POLICY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RESERVED_ARMS = frozenset({"champion", "winner", "explicit"})

AUTO = "auto"
"""The reserved policy name that asks for screening and assignment at hand-over."""


class ExperimentError(ValueError):
    """A strategy map or experiment that cannot be used; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Challenger(_Strict):
    """An arm that takes `share` of a segment's new loans with its own policy."""

    name: str = Field(pattern=NAME_PATTERN)
    policy: str = Field(pattern=POLICY_PATTERN)
    share: Decimal = Field(gt=0, lt=1)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_ARMS:
            raise ValueError(f"{value!r} is a reserved arm name ({', '.join(sorted(RESERVED_ARMS))})")
        return value

    @field_validator("share")
    @classmethod
    def _ten_thousandths(cls, value: Decimal) -> Decimal:
        if (value * BUCKETS) != (value * BUCKETS).to_integral_value():
            raise ValueError(f"share {value} has more than 4 decimals")
        return value


class SegmentArms(_Strict):
    """A segment's champion policy and its challengers (shares summing below 1)."""

    champion: str = Field(pattern=POLICY_PATTERN)
    challengers: list[Challenger] = []

    @model_validator(mode="after")
    def _shares(self) -> SegmentArms:
        if sum((c.share for c in self.challengers), Decimal(0)) >= 1:
            raise ValueError("challengers' shares must sum below 1 (the champion gets the rest)")
        names = [c.name for c in self.challengers]
        if len(set(names)) != len(names):
            raise ValueError("two challengers share a name")
        return self

    def policy_of(self, arm: str) -> str | None:
        """The policy of arm `arm` ("champion" or a challenger's name) in this segment."""
        if arm == "champion":
            return self.champion
        return next((c.policy for c in self.challengers if c.name == arm), None)


class StrategyMap(_Strict):
    """Each segment of a segmentation (`strategies/<segmentation>.toml`) to its policies."""

    segmentation: str = Field(default="segmentation", pattern=POLICY_PATTERN)
    segments: dict[str, SegmentArms] = Field(min_length=1)
    version: str = ""

    def arms(self, segment: str) -> SegmentArms:
        found = self.segments.get(segment)
        if found is None:
            raise ExperimentError(f"no strategy for segment {segment!r} (known: {', '.join(self.segments)})")
        return found

    def policies(self) -> set[str]:
        """Every policy the map or experiment may give a loan."""
        return {a.champion for a in self.segments.values()} | {
            c.policy for a in self.segments.values() for c in a.challengers
        }

    def arm_names(self) -> set[str]:
        return {"champion"} | {c.name for a in self.segments.values() for c in a.challengers}


class Experiment(StrategyMap):
    """A named champion/challenger test over a segmentation."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""


class Assignment(_Strict):
    """Which arm and policy a loan got: `experiment` "" when no experiment decided it (the
    strategy map's champion, or an explicit policy); `in_test` only while the experiment runs."""

    experiment: str = ""
    arm: str
    policy: str
    in_test: bool = False


class StrategyAssignment(_Strict):
    """What is recorded on a loan at hand-over: its screening and its assignment."""

    screening: Screening
    assignment: Assignment

    @property
    def segment(self) -> str:
        return self.screening.segment

    @property
    def arm(self) -> str:
        return self.assignment.arm

    @property
    def policy(self) -> str:
        return self.assignment.policy

    def audit_detail(self) -> dict[str, str]:
        """The audit entry's detail: everything needed to see why the loan got its strategy."""
        s, a = self.screening, self.assignment
        return {
            "segment": s.segment,
            "score": str(s.score),
            "points": s.summary(),
            "override": s.override or "",
            "scorecard": f"{s.scorecard} {s.scorecard_version}",
            "experiment": a.experiment,
            "arm": a.arm,
            "policy": a.policy,
            "in_test": str(a.in_test).lower(),
        }


def bucket(experiment: str, loan_id: str) -> int:
    """The loan's bucket in an experiment, 0..9,999: the same for the same pair, always."""
    return int(hashlib.sha256(f"{experiment}:{loan_id}".encode()).hexdigest(), 16) % BUCKETS


def assign(
    experiment: Experiment,
    status: ExperimentStatus,
    screening_segment: str,
    loan_id: str,
    winners: dict[str, str] | None = None,
) -> Assignment:
    """The arm and policy of a new loan in segment `screening_segment` (see the module doc).
    `winners`: the policy per segment chosen when the experiment ended ("*" for every segment
    without its own); a segment with none keeps its champion."""
    arms = experiment.arms(screening_segment)
    if status == "paused":
        return Assignment(experiment=experiment.name, arm="champion", policy=arms.champion, in_test=False)
    if status == "ended":
        chosen = (winners or {}).get(screening_segment) or (winners or {}).get("*") or arms.champion
        return Assignment(experiment=experiment.name, arm="winner", policy=chosen, in_test=False)
    edge = bucket(experiment.name, loan_id)
    cumulative = 0
    for challenger in arms.challengers:
        cumulative += int(challenger.share * BUCKETS)
        if edge < cumulative:
            return Assignment(experiment=experiment.name, arm=challenger.name, policy=challenger.policy, in_test=True)
    return Assignment(experiment=experiment.name, arm="champion", policy=arms.champion, in_test=True)


def champion(strategy: StrategyMap, screening_segment: str) -> Assignment:
    """No experiment: the strategy map's champion for the segment."""
    return Assignment(arm="champion", policy=strategy.arms(screening_segment).champion)


def explicit(policy: str) -> Assignment:
    """The platform named the policy: no experiment, arm "explicit"."""
    return Assignment(arm="explicit", policy=policy)


def resolve_winners(experiment: Experiment, winner: str, segment: str | None = None) -> dict[str, str]:
    """The policy per segment when `winner` wins (in `segment`, or in every segment): an arm's
    name ("champion" or a challenger) stands for that arm's policy in each segment that has it
    (segments without such an arm are left out: they keep their champion); any other name is a
    policy, given to the segment(s) as it is."""
    segments = [segment] if segment is not None else list(experiment.segments)
    for name in segments:
        experiment.arms(name)
    if winner in experiment.arm_names():
        found = {name: experiment.arms(name).policy_of(winner) for name in segments}
        return {name: policy for name, policy in found.items() if policy is not None}
    return dict.fromkeys(segments, winner)


def check_covers(strategy: StrategyMap, card: Scorecard, source: str) -> None:
    """Every segment the scorecard can give has a strategy, and no strategy names a segment it
    cannot give (a typo would silently never match)."""
    wanted, given = set(card.segment_names), set(strategy.segments)
    if wanted - given:
        raise ExperimentError(
            f"{source}: field 'segments': no strategy for segment(s) {', '.join(sorted(wanted - given))}"
            f" of scorecard {card.name}"
        )
    if given - wanted:
        raise ExperimentError(
            f"{source}: field 'segments': scorecard {card.name} has no segment(s) {', '.join(sorted(given - wanted))}"
        )


def _load(text: str, source: str) -> dict[str, object]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{source}: not valid TOML: {exc}") from exc
    data.setdefault("version", hashlib.sha256(text.encode()).hexdigest()[:12])
    for arms in data.get("segments", {}).values() if isinstance(data.get("segments"), dict) else []:
        for challenger in arms.get("challengers", []) if isinstance(arms, dict) else []:
            if isinstance(challenger, dict) and isinstance(challenger.get("share"), float):
                challenger["share"] = str(challenger["share"])  # a TOML 0.2 is the decimal 0.2
    return data


def parse_experiment(text: str, source: str) -> Experiment:
    """Validate TOML text as an experiment; `source` names the file in error messages."""
    data = _load(text, source)
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise ExperimentError(describe(source, exc)) from exc


def parse_strategy_map(text: str, source: str) -> StrategyMap:
    """Validate TOML text as the strategy map used when no experiment applies (champions only)."""
    data = _load(text, source)
    try:
        strategy = StrategyMap.model_validate(data)
    except ValidationError as exc:
        raise ExperimentError(describe(source, exc)) from exc
    tested = sorted(name for name, arms in strategy.segments.items() if arms.challengers)
    if tested:
        raise ExperimentError(
            f"{source}: field 'segments.{tested[0]}.challengers': a strategy map has champions only;"
            " challengers belong in an experiment (strategies/experiments/)"
        )
    return strategy
