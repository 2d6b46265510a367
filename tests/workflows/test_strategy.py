"""Screening and assignment at hand-over, on the time-skipping server: a loan handed over with
policy `auto` gets its segment, score and arm on its status, its audit record, its loan row and
its search attributes; the running experiment decides its arm (the same arm on a second
hand-over); a named policy is kept with arm "explicit"; an override sends a loan whose borrower
has a dispute open on another loan to the gentle strategy."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session

import starter
from db.tables import AuditRow, LoanRow
from models.arrangements import DisputeRequest
from models.experiment import AUTO, assign, parse_experiment
from ops import experiments
from tests.helpers import ROOT, Harness, make_loan

SAMPLE = ROOT / "strategies" / "experiments" / "sample.toml"


def start_sample(engine: Engine) -> str:
    text = SAMPLE.read_text(encoding="utf-8")
    return str(experiments.start(engine, text, str(SAMPLE))["name"])


def challenger_id(prefix: str) -> str:
    """A loan id the sample experiment puts in its early-call arm (standard segment)."""
    experiment = parse_experiment(SAMPLE.read_text(encoding="utf-8"), "sample.toml")
    return next(
        f"{prefix}-{n}"
        for n in range(10_000)
        if assign(experiment, "running", "standard", f"{prefix}-{n}").arm == "early-call"
    )


async def test_an_auto_loan_gets_its_segment_score_and_arm_everywhere(harness: Harness) -> None:
    name = start_sample(harness.engine)
    loan = make_loan(challenger_id("AUTO"), dpd=40, now=await harness.now(), principal="2000.00")
    await harness.start(loan, AUTO)
    status = await harness.status(loan)

    strategy = status.strategy
    assert strategy is not None
    assert (strategy.segment, strategy.screening.score, strategy.screening.override) == ("standard", 30, None)
    assert (strategy.assignment.experiment, strategy.arm, strategy.policy) == (name, "early-call", "early-call")
    assert strategy.assignment.in_test and status.policy == "early-call"
    assert [e.action for e in status.timeline[:2]] == ["collection_started", "strategy_assigned"]

    audit = next(r for r in harness.rows(AuditRow, loan.loan_id, AuditRow.seq) if r.action == "strategy_assigned")
    assert audit.key == f"{loan.loan_id}/strategy" and audit.actor == "screening"
    assert '"segment": "standard"' in audit.detail and '"arm": "early-call"' in audit.detail
    assert "dpd_at_handover 31-60 +20" in audit.detail
    with Session(harness.engine) as session:
        row = session.get(LoanRow, loan.loan_id)
        assert row is not None
        assert (row.segment, row.score, row.experiment, row.arm, row.policy) == (
            "standard",
            30,
            name,
            "early-call",
            "early-call",
        )

    described = await harness.client.get_workflow_handle(f"collection-{loan.loan_id}").describe()
    attributes = {k.name: v for k, v in described.typed_search_attributes}
    assert attributes["CollectionSegment"] == "standard"
    assert attributes["CollectionArm"] == f"{name}/early-call"
    assert attributes["CollectionPolicy"] == "early-call"

    await harness.start(loan, AUTO)  # handed over again: nothing new, the same arm
    assert (await harness.status(loan)).strategy == strategy


async def test_a_named_policy_is_screened_and_kept_and_a_paused_experiment_gives_the_champion(
    harness: Harness,
) -> None:
    name = start_sample(harness.engine)
    named = make_loan(dpd=3, now=await harness.now())
    await harness.start(named, "default")
    strategy = (await harness.status(named)).strategy
    assert strategy is not None and (strategy.segment, strategy.arm, strategy.policy) == (
        "standard",
        "explicit",
        "default",
    )
    assert strategy.assignment.experiment == ""

    experiments.pause(harness.engine, name)
    paused = make_loan(challenger_id("PAUSED"), dpd=40, now=await harness.now(), principal="2000.00")
    await harness.start(paused, AUTO)
    got = (await harness.status(paused)).strategy
    assert got is not None and (got.arm, got.policy, got.assignment.in_test) == ("champion", "default", False)

    experiments.end(harness.engine, name, "early-call")
    ended = make_loan(dpd=40, now=await harness.now())
    await harness.start(ended, AUTO)
    won = (await harness.status(ended)).strategy
    assert won is not None and (won.arm, won.policy) == ("winner", "early-call")
    assert (await harness.status(paused)).policy == "default"  # a loan in flight keeps its arm


async def test_a_dispute_on_another_loan_sends_the_borrower_to_the_gentle_strategy(harness: Harness) -> None:
    now = await harness.now()
    first = make_loan(dpd=10, now=now)
    await harness.start(first, AUTO)  # no experiment: the strategy map's champion
    screened = (await harness.status(first)).strategy
    assert screened is not None and (screened.arm, screened.assignment.experiment) == ("champion", "")
    await starter.raise_dispute(harness.client, first.loan_id, DisputeRequest(reason="not mine"))
    await harness.quiet(first)
    await harness.env.sleep(timedelta(minutes=1))

    second = make_loan(dpd=10, now=await harness.now()).model_copy(update={"borrower": first.borrower})
    await harness.start(second, AUTO)
    strategy = (await harness.status(second)).strategy
    assert strategy is not None
    assert (strategy.segment, strategy.screening.override, strategy.policy) == (
        "gentle",
        "dispute-on-other-loan",
        "gentle",
    )
    points = {p.attribute: p.band for p in strategy.screening.points}
    assert points["other_loans_in_collection"] == "1"
