"""The first thing a new loan does: pin its policy and conduct rules and register it.

One activity, before the loan's first decision: the policy file is read and checked (its
templates linted under its rule set), the rule set and holiday calendar loaded, the borrower and
loan rows written with the start's audit entry, and the portfolio's search attributes made sure
of. All of it is idempotent (cached per worker, insert-once by key), so a retry repeats nothing.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities.admin import AdminActivities
from activities.records import RecordActivities
from models.clock import virtual_now
from models.requests import LoanRegistration, Prepared, PrepareRequest
from models.schedule import days_past_due, stage_for_dpd


class StartActivities:
    def __init__(self, records: RecordActivities, admin: AdminActivities) -> None:
        self._records = records
        self._admin = admin

    @activity.defn
    async def prepare(self, req: PrepareRequest) -> Prepared:
        """Pin, check and register a new loan; a broken policy fails for good (the start fails,
        naming the file and the field)."""
        prepared = await asyncio.to_thread(self._pin_and_register, req)
        search_ready = await self._admin.ensure_search_attributes()
        return prepared.model_copy(update={"search_ready": search_ready})

    def _pin_and_register(self, req: PrepareRequest) -> Prepared:
        policy = self._records.load_policy(req.policy)
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
            )
        )
        return Prepared(policy=policy, rules=rules, search_ready=False, started_at=started)
