"""The `make run` sample portfolio: bundled loans written to the database (once) and handed to
collection through the client API with policy `auto`, after the sample experiment
(strategies/experiments/sample.toml) is started, so the portfolio is screened and its standard
and high-risk loans split between the default ladder and the early-call challenger."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client

from client.loans import start_collection
from db.store import make_engine
from db.tables import BorrowerRow, LoanRow
from infra.settings import ROOT, settings
from models import Borrower, OverdueLoan
from models.experiment import AUTO, parse_experiment
from models.schedule import local_date
from ops import experiments

SAMPLE_PORTFOLIO = ROOT / "data" / "sample_portfolio.json"
SAMPLE_EXPERIMENT = ROOT / "strategies" / "experiments" / "sample.toml"


def start_sample_experiment(engine: Engine) -> dict[str, Any]:
    """Start the sample experiment unless it was started before (then it is left as it is:
    paused, ended or running) or another experiment is active (then that one is left to run
    and returned). Running `make run` again changes nothing."""
    text = SAMPLE_EXPERIMENT.read_text(encoding="utf-8")
    name = parse_experiment(text, str(SAMPLE_EXPERIMENT)).name
    try:
        return experiments.start(engine, text, str(SAMPLE_EXPERIMENT))
    except experiments.ExperimentConflict:
        try:
            return experiments.get(engine, name)
        except experiments.ExperimentNotFound:
            return next(e for e in experiments.list_all(engine) if e["status"] != "ended")


def sample_arms(database_url: str | None = None, timeout: float = 15.0) -> dict[str, int]:
    """How many sample loans each `<segment> <experiment>/<arm>` has, once their rows say
    (the start activity writes them a moment after the hand-over; what is there after
    `timeout` seconds otherwise)."""
    engine = make_engine(database_url or settings().database_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with Session(engine) as session:
                rows = session.exec(
                    select(LoanRow.segment, LoanRow.experiment, LoanRow.arm).where(
                        col(LoanRow.loan_id).startswith("SAMPLE-")
                    )
                ).all()
            if all(arm is not None for _, _, arm in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        engine.dispose()
    return dict(
        sorted(
            Counter(
                f"{segment} {f'{exp}/' if exp else ''}{arm}" for segment, exp, arm in rows if arm is not None
            ).items()
        )
    )


async def load_sample_portfolio(
    client: Client, database_url: str | None = None, *, task_queue: str | None = None
) -> list[str]:
    """Start the sample experiment (once), put the bundled sample loans in the database (once)
    and start their collection with policy `auto` (on `task_queue`, else the
    TEMPORAL_TASK_QUEUE setting); their workflow ids.

    Due dates come from each sample's DPD on the day it is first loaded and are then read
    back from the database, so running this again starts nothing new.
    """
    engine = make_engine(database_url or settings().database_url)
    samples = json.loads(SAMPLE_PORTFOLIO.read_text(encoding="utf-8"))
    loans = []
    try:
        start_sample_experiment(engine)
        with Session(engine) as session:
            for raw in samples:
                borrower = Borrower(**raw["borrower"])
                row = session.get(LoanRow, raw["loan_id"])
                if row is None:
                    if session.get(BorrowerRow, borrower.borrower_id) is None:
                        session.add(BorrowerRow(**borrower.model_dump()))
                        session.flush()
                    due = local_date(datetime.now(UTC), borrower.timezone) - timedelta(days=raw["dpd"])
                    row = LoanRow(
                        loan_id=raw["loan_id"],
                        borrower_id=borrower.borrower_id,
                        currency=raw["currency"],
                        principal=Decimal(raw["principal"]),
                        interest=Decimal(raw["interest"]),
                        fees=Decimal(raw["fees"]),
                        penalties=Decimal(0),
                        due_date=due,
                    )
                    session.add(row)
                    session.commit()
                loans.append(
                    OverdueLoan(
                        loan_id=row.loan_id,
                        borrower=borrower,
                        currency=row.currency,
                        principal=row.principal,
                        interest=row.interest,
                        fees=row.fees,
                        penalties=row.penalties,
                        due_date=row.due_date,
                        earlier_delinquencies=raw.get("earlier_delinquencies", 0),
                        last_payment_date=(
                            row.due_date - timedelta(days=raw["last_paid_days_before_due"])
                            if "last_paid_days_before_due" in raw
                            else None
                        ),
                        hardship_flag=raw.get("hardship_flag", False),
                    )
                )
    finally:
        engine.dispose()
    return [await start_collection(client, loan, AUTO, task_queue=task_queue) for loan in loans]
