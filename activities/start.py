"""The first thing a new loan does: screen it, pin its policy and conduct rules and register it.

One activity, before the loan's first decision: the loan is screened and assigned a strategy
(`activities.screening`; policy `auto` takes the policy it assigns, a named policy is kept),
the policy file is read and checked (its templates linted under its rule set), the rule set and
holiday calendar loaded, the borrower and loan rows written with the start's audit entry, and
the portfolio's search attributes made sure of. All of it is idempotent (cached per worker,
insert-once by key), so a retry repeats nothing.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.admin import AdminActivities
from activities.records import RecordActivities
from activities.screening import Screener, StrategyError
from models.clock import virtual_now
from models.experiment import AUTO, StrategyAssignment
from models.requests import LoanRegistration, Prepared, PrepareRequest
from models.schedule import days_past_due, stage_for_dpd


class StartActivities:
    def __init__(self, records: RecordActivities, admin: AdminActivities, screener: Screener | None = None) -> None:
        self._records = records
        self._admin = admin
        self._screener = screener

    @activity.defn
    async def prepare(self, req: PrepareRequest) -> Prepared:
        """Screen, pin, check and register a new loan; a broken policy (or, for `auto`, a broken
        strategies file) fails for good (the start fails, naming the file and the field)."""
        prepared = await asyncio.to_thread(self._pin_and_register, req)
        search_ready = await self._admin.ensure_search_attributes()
        return prepared.model_copy(update={"search_ready": search_ready})

    def _pin_and_register(self, req: PrepareRequest) -> Prepared:
        strategy = self._screen(req)
        policy = self._records.load_policy(strategy.policy if strategy is not None else req.policy)
        rules = self._records.load_conduct_rules(policy.conduct)
        started = virtual_now(req.started_at, policy.clock)
        loan = req.loan
        stage = stage_for_dpd(days_past_due(started, loan.due_date, loan.borrower.timezone), policy)
        self._records.register_loan(
            LoanRegistration(
                loan=loan,
                policy=policy.name,
                policy_version=policy.version,
                workflow_id=req.workflow_id,
                stage=stage,
                at=started,
                strategy=strategy,
            )
        )
        return Prepared(policy=policy, rules=rules, search_ready=False, started_at=started, strategy=strategy)

    def _screen(self, req: PrepareRequest) -> StrategyAssignment | None:
        """The screening at the hand-over (real time: the workflow's start), None when there is
        no screener (a worker built without one) or an explicit policy's loan cannot be screened."""
        if self._screener is None:
            if req.policy == AUTO:
                raise ApplicationError("policy auto needs screening; this worker has none", non_retryable=True)
            return None
        try:
            return self._screener.strategy(req.loan, req.policy, req.started_at)
        except StrategyError as exc:
            raise ApplicationError(str(exc), type="StrategyError", non_retryable=True) from exc
