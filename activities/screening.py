"""Screening and strategy assignment at hand-over, for the start activity (`activities.start`).

The facts come from the loan as handed over (DPD, balance, product, the platform's record of
earlier delinquencies, last payment and hardship) and from the database (the borrower's other
loans in collection, an open dispute on one of them); the scorecard, the strategy map and the
experiment files from the strategies folder (STRATEGIES_DIR), the experiment's state from the
`experiments` table. The rules themselves are `models.segmentation.screen` and
`models.experiment.assign`, the same functions the strategy lab runs.

Policy `auto`: screen, then assign by the current experiment (or the strategy map's champion);
a broken or missing strategies file fails the start for good, naming the file and field, as a
broken policy does. An explicit policy: screen all the same, arm "explicit"; if the strategies
files cannot be used the loan starts unscreened (the platform chose its policy; a bad scorecard
must not stop it), with a warning in the worker's log.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from db import experiments
from db.tables import AuditRow, LoanRow
from infra.loaders import load_segmentation, load_strategy_map
from models.experiment import AUTO, ExperimentError, StrategyAssignment, assign, champion, explicit
from models.loan import OverdueLoan, Stage
from models.policy import PolicyError
from models.segmentation import HandoverFacts, ScreeningError, SegmentationError, handover_facts, screen

log = logging.getLogger("collections.screening")

IN_COLLECTION = (Stage.early, Stage.middle, Stage.late, Stage.written_off)
"""Stages of a loan row that count as in collection (written off: recovery goes on)."""
DISPUTE_ACTIONS = ("dispute_open", "dispute_upheld", "dispute_rejected")
"""Audit actions of a dispute's life (`models.lifecycle.requests`): the latest says if it is open."""

STRATEGY_ERRORS = (SegmentationError, ExperimentError, ScreeningError, PolicyError)


class StrategyError(ValueError):
    """Policy `auto` but the loan cannot be screened or assigned (a strategies file is broken
    or missing); the message names the file and field."""


class Screener:
    def __init__(self, engine: Engine, strategies_dir: Path) -> None:
        self._engine = engine
        self._dir = strategies_dir

    def strategy(self, loan: OverdueLoan, policy: str, at: datetime) -> StrategyAssignment | None:
        """The loan's screening and assignment at hand-over time `at` (see the module doc)."""
        try:
            return self._strategy(loan, policy, at)
        except STRATEGY_ERRORS as exc:
            if policy == AUTO:
                raise StrategyError(str(exc)) from exc
            log.warning("loan %s starts unscreened (policy %s): %s", loan.loan_id, policy, exc)
            return None

    def _strategy(self, loan: OverdueLoan, policy: str, at: datetime) -> StrategyAssignment:
        facts = self.facts(loan, at)
        found = experiments.current(self._engine) if policy == AUTO else None
        if found is None:
            strategy, card = load_strategy_map(self._dir)
            screening = screen(card, facts)
            assignment = champion(strategy, screening.segment) if policy == AUTO else explicit(policy)
        else:
            experiment, status, winners = found
            card = load_segmentation(experiment.segmentation, self._dir)
            screening = screen(card, facts)
            assignment = assign(experiment, status, screening.segment, loan.loan_id, winners)
        return StrategyAssignment(screening=screening, assignment=assignment)

    def facts(self, loan: OverdueLoan, at: datetime) -> HandoverFacts:
        """What the scorecard looks at: the loan's own fields and the borrower's other loans."""
        others, disputed = self._other_loans(loan)
        return handover_facts(loan, at, others, disputed)

    def _other_loans(self, loan: OverdueLoan) -> tuple[int, bool]:
        """How many other loans of the borrower are in collection, and whether one of the
        borrower's other loans has a dispute open (its latest dispute entry opened one)."""
        with Session(self._engine) as session:
            rows = session.exec(
                select(LoanRow.loan_id, LoanRow.stage, LoanRow.workflow_id).where(
                    LoanRow.borrower_id == loan.borrower.borrower_id, LoanRow.loan_id != loan.loan_id
                )
            ).all()
            ids = [loan_id for loan_id, _, _ in rows]
            in_collection = sum(1 for _, stage, wf in rows if wf is not None and stage in IN_COLLECTION)
            if not ids:
                return 0, False
            entries = session.exec(
                select(AuditRow.loan_id, AuditRow.action)
                .where(col(AuditRow.loan_id).in_(ids), col(AuditRow.action).in_(DISPUTE_ACTIONS))
                .order_by(col(AuditRow.loan_id), col(AuditRow.seq))
            ).all()
        latest = dict(entries)
        return in_collection, any(action == "dispute_open" for action in latest.values())
