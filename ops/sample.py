"""The `make run` sample portfolio: bundled loans written to the database (once) and handed to
collection through the client API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlmodel import Session
from temporalio.client import Client

from client.loans import start_collection
from db.store import make_engine
from db.tables import BorrowerRow, LoanRow
from infra.settings import ROOT, settings
from models import Borrower, OverdueLoan
from models.schedule import local_date

SAMPLE_PORTFOLIO = ROOT / "data" / "sample_portfolio.json"


async def load_sample_portfolio(
    client: Client, database_url: str | None = None, *, task_queue: str | None = None
) -> list[str]:
    """Put the bundled sample loans in the database (once) and start their collection (on
    `task_queue`, else the TEMPORAL_TASK_QUEUE setting); their workflow ids.

    Due dates come from each sample's DPD on the day it is first loaded and are then read
    back from the database, so running this again starts nothing new.
    """
    engine = make_engine(database_url or settings().database_url)
    samples = json.loads(SAMPLE_PORTFOLIO.read_text(encoding="utf-8"))
    loans = []
    try:
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
                    )
                )
    finally:
        engine.dispose()
    return [await start_collection(client, loan, task_queue=task_queue) for loan in loans]
