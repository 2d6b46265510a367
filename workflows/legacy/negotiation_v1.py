"""Negotiation and the borrower's situation, as handlers of the collection workflow.

A mixin of `CollectionWorkflow`: it uses the workflow's state and helpers (`_state`, `_note`,
`_record`, `_activity`, `_recall`, `_cancel_tasks`, `_write_off`, `_stage`, `_today`), declared
for the type checker by `CollectionHost` (a Protocol the host satisfies). Every
request is a validated update: the validator refuses it with the reason (nothing is written
to history, nothing changes) and the handler applies it and answers with a `Decision`.
The dated checks (promise day, instalment days, settlement deadline, end of a breathing
space) are due items of the main loop; see `CollectionWorkflow._next_due`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.ledger import LedgerActivities
    from activities.tasks import TaskActivities
    from models.arrangements import (
        ArrangementRejected,
        Decision,
        DisputeRequest,
        DisputeResolution,
        HardshipDecision,
        HardshipReport,
        Hold,
        Plan,
        PlanProposal,
        Promise,
        PromiseRequest,
        Settlement,
        SettlementOffer,
        StopInfo,
        StopRequest,
        check_promise,
        check_settlement,
        plan_schedule,
        refuse_arrangement,
    )
    from models.loan import Balance, Stage
    from models.money import ZERO
    from models.negotiation import held_so_far
    from models.requests import TaskClosure, TaskRequest, WaiverRequest

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import date, datetime
    from decimal import Decimal
    from typing import Protocol, TypeVar

    from models.arrangements import Instalment
    from models.policy import Policy, StopRoute
    from models.status import CollectionState

    _Self = TypeVar("_Self")
    _Arg = TypeVar("_Arg")
    _Result = TypeVar("_Result")

    class CollectionHost(Protocol):
        """What `Negotiation` uses of the workflow it is mixed into (the legacy
        `CollectionWorkflow`); mypy checks the host's members against these."""

        _s: CollectionState | None
        _wake: bool
        _actor: str

        @property
        def _state(self) -> CollectionState: ...
        def _now(self, policy: Policy | None = None) -> datetime: ...
        def _today(self) -> date: ...
        def _stage(self) -> Stage: ...
        def _context(self, deadline_days: int | None, **extra: str) -> dict[str, str]: ...
        def _note(
            self, action: str, *, channel: str = "", outcome: str = "", key: str = "", detail: str = ""
        ) -> None: ...
        async def _activity(
            self, method: Callable[[_Self, _Arg], _Result], arg: _Arg, *, local: bool = False
        ) -> _Result: ...
        async def _record(self, key: str, action: str, actor: str = "workflow", **detail: str) -> None: ...
        async def _recall(self, reason: str) -> None: ...
        async def _cancel_tasks(self, reason: str) -> None: ...
        async def _write_off(self) -> None: ...

    _Host = CollectionHost
else:
    _Host = object


class Negotiation(_Host):
    """Promises, plans, settlements, hardship, disputes and stops."""

    _actor: str

    # ------------------------------------------------------------ promise to pay

    @workflow.update
    async def promise_to_pay(self, req: PromiseRequest) -> Decision:
        self._guard(self._check_promise, req)
        s = self._state
        ref = self._new_ref("promise")
        s.promise = Promise(
            promise_id=ref,
            amount=req.amount,
            due=req.date,
            made_at=self._now(),
            paid_at_start=s.paid_total,
            held_at_start=held_so_far(s, self._now()),
            made_by=req.made_by,
        )
        return await self._accepted(ref, "promise", f"{req.amount} {s.loan.currency} by {req.date}", req.made_by)

    @promise_to_pay.validator
    def _check_promise(self, req: PromiseRequest) -> None:
        s = self._ready_state()
        self._refuse_arrangement()
        check_promise(
            req,
            today=self._today(),
            outstanding=s.balance.total,
            currency=s.loan.currency,
            broken=s.counts.promises_broken,
            promise_open=s.open_promise() is not None,
            plan_active=s.active_plan() is not None,
            policy=s.policy,
        )

    # ------------------------------------------------------------ instalment plan

    @workflow.update
    async def propose_plan(self, req: PlanProposal) -> Decision:
        self._guard(self._check_plan, req)
        return await self._start_plan(req, req.made_by)

    @propose_plan.validator
    def _check_plan(self, req: PlanProposal) -> None:
        self._ready_state()
        self._refuse_arrangement()
        self._schedule(req)

    def _schedule(self, req: PlanProposal) -> list[Instalment]:
        s = self._state
        active = s.active_plan()
        interest = s.balance.interest if s.policy.plan.waive_interest else ZERO
        return plan_schedule(
            req,
            total=s.balance.total - interest,
            currency=s.loan.currency,
            today=self._today(),
            policy=s.policy,
            renegotiations=(active.renegotiation + 1) if active else 0,
        )

    async def _start_plan(self, req: PlanProposal, actor: str) -> Decision:
        """Accept a checked proposal: it replaces a promise or renegotiates the active plan."""
        s = self._state
        schedule = self._schedule(req)
        renegotiation = 0
        if old := s.active_plan():
            old.status = "renegotiated"
            renegotiation = old.renegotiation + 1
        if promise := s.open_promise():
            promise.status = "superseded"
        waived = Balance(interest=s.balance.interest) if s.policy.plan.waive_interest else Balance()
        s.balance = s.balance.with_component("interest", s.balance.interest - waived.interest)
        ref = self._new_ref("plan")
        s.plan = Plan(
            plan_id=ref,
            total=s.balance.total,
            frequency=req.frequency,
            instalments=schedule,
            made_at=self._now(),
            paid_at_start=s.paid_total,
            held_at_start=held_so_far(s, self._now()),
            made_by=actor,
            renegotiation=renegotiation,
        )
        if waived.total > 0:
            await self._waive(waived, "waiver", f"{ref}/waiver", "interest waived for the plan")
        detail = (
            f"{len(schedule)} payments ({req.frequency}) from {schedule[0].due} to {schedule[-1].due}, "
            f"total {s.balance.total}"
        )
        return await self._accepted(ref, "plan", detail, actor, "renegotiated" if renegotiation else "accepted")

    # ------------------------------------------------------------ settlement

    @workflow.update
    async def offer_settlement(self, offer: SettlementOffer) -> Decision:
        self._guard(self._check_settlement, offer)
        s = self._state
        discount = self._discount(offer)
        ref = self._new_ref("settlement")
        s.settlement = Settlement(
            offer_id=ref,
            amount=offer.amount,
            deadline=offer.deadline,
            discount=discount,
            made_at=self._now(),
            paid_at_start=s.paid_total,
            held_at_start=held_so_far(s, self._now()),
            made_by=offer.made_by,
        )
        detail = f"{offer.amount} {s.loan.currency} by {offer.deadline} ({discount:.2%} off {s.balance.total})"
        return await self._accepted(ref, "settlement", detail, offer.made_by, "offered")

    @offer_settlement.validator
    def _check_settlement(self, offer: SettlementOffer) -> None:
        self._ready_state()
        self._refuse_arrangement()
        self._discount(offer)

    def _discount(self, offer: SettlementOffer) -> Decimal:
        s = self._state
        return check_settlement(
            offer,
            today=self._today(),
            outstanding=s.balance.total,
            currency=s.loan.currency,
            stage=str(self._stage()),
            settlement_open=s.open_settlement() is not None,
            policy=s.policy,
        )

    # ------------------------------------------------------------ hardship

    @workflow.update
    async def report_hardship(self, report: HardshipReport) -> Decision:
        self._guard(self._check_hardship, report)
        s, now = self._state, self._now()
        until = now + timedelta(days=s.policy.hardship.breathing_space_days)
        task_id = self._new_ref("hardship-review")
        s.holds.append(
            Hold(
                kind="hardship",
                reason=report.reason,
                evidence_ref=report.evidence_ref,
                started_at=now,
                until=until,
                review_task_id=task_id,
                by=report.reported_by,
            )
        )
        decision = await self._accepted(
            task_id,
            "hardship",
            f"{report.reason}; breathing space until {until:%Y-%m-%d}",
            report.reported_by,
            "breathing_space",
            report.evidence_ref,
        )
        await self._stop_contact("hardship reported")
        await self._activity(
            TaskActivities.create_task,
            TaskRequest(
                key=task_id,
                loan_id=s.loan.loan_id,
                at=now,
                workflow_id=workflow.info().workflow_id,
                kind="hardship_review",
                queue=s.policy.hardship.review_queue,
                template=s.policy.hardship.review_template,
                language=s.loan.borrower.language,
                attempt=1,
                due_by=until,
                context=self._context(None, reason=report.reason, evidence_ref=report.evidence_ref or "-"),
            ),
        )
        return decision

    @report_hardship.validator
    def _check_hardship(self, report: HardshipReport) -> None:
        s = self._ready_state()
        if s.closed_as is not None or s.stop is not None:
            raise ArrangementRejected("the loan is closed" if s.closed_as else "collection is stopped for this loan")
        if s.hold("hardship"):
            raise ArrangementRejected("a hardship breathing space is already running")

    @workflow.update
    async def review_hardship(self, decision: HardshipDecision) -> Decision:
        """Apply the reviewer's decision (offer a plan, waive, extend, resume, write off)."""
        self._guard(self._check_review, decision)
        s = self._state
        hold = s.hold("hardship")
        assert hold is not None
        self._note("hardship_review", outcome=decision.outcome, key=hold.review_task_id, detail=decision.note)
        await self._activity(
            TaskActivities.close_task,
            TaskClosure(
                task_id=hold.review_task_id,
                loan_id=s.loan.loan_id,
                at=self._now(),
                outcome=decision.outcome,
                note=decision.note,
                closed_by=decision.decided_by,
            ),
        )
        if decision.outcome == "extend_term":
            assert decision.extend_days is not None
            hold.until = self._now() + timedelta(days=decision.extend_days)
            return await self._accepted(
                hold.review_task_id,
                "hardship",
                f"breathing space until {hold.until:%Y-%m-%d}",
                decision.decided_by,
                "extended",
            )
        s.holds.remove(hold)
        self._wake = True
        if decision.outcome in ("waive_interest", "waive_fees"):
            parts = ("interest",) if decision.outcome == "waive_interest" else ("fees", "penalties")
            waived = Balance(**{p: s.balance.component(p) for p in parts})
            for p in parts:
                s.balance = s.balance.with_component(p, ZERO)
            await self._waive(
                waived, "waiver", f"{hold.review_task_id}/{decision.outcome}", decision.note or decision.outcome
            )
        elif decision.outcome == "offer_plan":
            assert decision.plan is not None
            return await self._start_plan(decision.plan, decision.decided_by)
        elif decision.outcome == "refer_to_write_off":
            await self._write_off()
        return await self._accepted(hold.review_task_id, "hardship", decision.outcome, decision.decided_by, "ended")

    @review_hardship.validator
    def _check_review(self, decision: HardshipDecision) -> None:
        s = self._ready_state()
        if s.closed_as is not None or s.hold("hardship") is None:
            raise ArrangementRejected("no hardship review is open on this loan")
        if decision.outcome == "extend_term" and decision.extend_days is None:
            raise ArrangementRejected("extend_term needs extend_days")
        if decision.outcome == "offer_plan":
            if decision.plan is None:
                raise ArrangementRejected("offer_plan needs the plan")
            self._refuse_arrangement()
            self._schedule(decision.plan)

    # ------------------------------------------------------------ dispute

    @workflow.update
    async def raise_dispute(self, req: DisputeRequest) -> Decision:
        self._guard(self._check_dispute, req)
        s, now = self._state, self._now()
        s.holds.append(Hold(kind="dispute", reason=req.reason, started_at=now, by=req.raised_by))
        ref = self._new_ref("dispute")
        decision = await self._accepted(ref, "dispute", req.reason, req.raised_by, "open")
        await self._stop_contact("dispute raised")
        if s.case is not None:
            s.case.last_event = "on hold (dispute)"
            self._note("court_hold", channel="court", outcome="on hold", key=s.case.case_id, detail="dispute raised")
            await self._record(f"{ref}/court-hold", "court_hold", req.raised_by)
        return decision

    @raise_dispute.validator
    def _check_dispute(self, req: DisputeRequest) -> None:
        s = self._ready_state()
        if s.closed_as is not None:
            raise ArrangementRejected("the loan is closed")
        if s.hold("dispute"):
            raise ArrangementRejected("a dispute is already open")

    @workflow.update
    async def resolve_dispute(self, res: DisputeResolution) -> Decision:
        """Upheld: the balance is cancelled and the loan closes; rejected: collection resumes."""
        self._guard(self._check_resolution, res)
        s = self._state
        hold = s.hold("dispute")
        assert hold is not None
        s.holds.remove(hold)
        self._wake = True
        ref = self._new_ref("dispute-resolution")
        if res.upheld:
            cancelled, s.balance = s.balance, Balance()
            s.closed_as, s.closed_at = Stage.dispute_upheld, self._now()
            self._cancel_arrangements("dispute upheld")
            decision = await self._accepted(ref, "dispute", res.note or "upheld", res.resolved_by, "upheld")
            await self._waive(cancelled, "cancellation", f"{ref}/cancellation", "dispute upheld")
            return decision
        if s.case is not None:
            s.case.last_event = "resumed"
        return await self._accepted(ref, "dispute", res.note or "rejected", res.resolved_by, "rejected")

    @resolve_dispute.validator
    def _check_resolution(self, res: DisputeResolution) -> None:
        s = self._ready_state()
        if s.closed_as is not None or s.hold("dispute") is None:
            raise ArrangementRejected("no dispute is open on this loan")

    # ------------------------------------------------------------ stop

    @workflow.update
    async def stop_collection(self, req: StopRequest) -> Decision:
        """Bankruptcy, death or cease-contact: no more contact on any channel, the agency is
        recalled, and the loan goes to legal review or is written off."""
        self._guard(self._check_stop, req)
        s, now = self._state, self._now()
        route: StopRoute = req.route or getattr(s.policy.stop, req.reason)
        first = s.stop is None
        s.stop = StopInfo(
            reason=req.reason,
            route=route,
            at=now,
            by=req.requested_by,
            evidence_ref=req.evidence_ref,
            legal_task_id=s.stop.legal_task_id if s.stop else "",
        )
        self._cancel_arrangements(f"collection stopped ({req.reason})")
        ref = self._new_ref("stop")
        decision = await self._accepted(
            ref, "stop", f"{req.reason}; route {route}", req.requested_by, route, req.evidence_ref
        )
        await self._stop_contact(f"collection stopped ({req.reason})")
        if route == "write_off":
            await self._write_off()
        elif first:
            s.stop.legal_task_id = f"{ref}/legal-review"
            await self._activity(
                TaskActivities.create_task,
                TaskRequest(
                    key=s.stop.legal_task_id,
                    loan_id=s.loan.loan_id,
                    at=now,
                    workflow_id=workflow.info().workflow_id,
                    kind="legal_review",
                    queue=s.policy.stop.legal_queue,
                    template=s.policy.stop.legal_template,
                    language=s.loan.borrower.language,
                    attempt=1,
                    due_by=now + timedelta(days=30),
                    context=self._context(None, reason=req.reason, evidence_ref=req.evidence_ref or "-"),
                ),
            )
        return decision

    @stop_collection.validator
    def _check_stop(self, req: StopRequest) -> None:
        s = self._ready_state()
        if s.closed_as is not None:
            raise ArrangementRejected("the loan is closed")
        if s.stop is not None and not (s.stop.route == "legal_review" and req.route == "write_off"):
            raise ArrangementRejected(
                "collection is already stopped; only a legal review can still refer it to write-off"
            )
        if s.charged_off_at is not None and (req.route or getattr(s.policy.stop, req.reason)) == "write_off":
            raise ArrangementRejected("the loan is already written off")

    # ------------------------------------------------------------ shared

    def _ready_state(self) -> CollectionState:
        if self._s is None:
            raise ArrangementRejected("collection is starting; try again in a moment")
        return self._s

    def _refuse_arrangement(self) -> None:
        s = self._state
        refuse_arrangement(
            closed=s.closed_as is not None, stopped=s.stop is not None, disputed=s.hold("dispute") is not None
        )

    def _guard(self, check: Callable[[_Arg], None], arg: _Arg) -> None:
        """Check again in the handler; the state may have moved since validation."""
        try:
            check(arg)
        except ArrangementRejected as exc:
            raise ApplicationError(str(exc), type="ArrangementRejected", non_retryable=True) from exc

    def _new_ref(self, kind: str) -> str:
        s = self._state
        s.arrangement_seq += 1
        return f"{s.loan.loan_id}/{kind}/{s.arrangement_seq}"

    async def _accepted(
        self, ref: str, kind: str, detail: str, actor: str, outcome: str = "accepted", evidence_ref: str = ""
    ) -> Decision:
        """Timeline and audit for an accepted request; the loop re-evaluates the pause."""
        self._actor = actor
        self._wake = True
        self._note(kind, outcome=outcome, key=ref, detail=f"{detail} (by {actor})")
        await self._record(f"{ref}/{outcome}", f"{kind}_{outcome}", actor, detail=detail, evidence_ref=evidence_ref)
        return Decision(accepted=True, reason=detail, ref=ref)

    def _cancel_arrangements(self, why: str) -> None:
        s = self._state
        for arrangement in (s.open_promise(), s.active_plan(), s.open_settlement()):
            if arrangement is not None:
                arrangement.status = "cancelled"
                self._note("arrangement_cancelled", outcome="cancelled", detail=why)

    async def _stop_contact(self, why: str) -> None:
        """Holds and stops: recall the agency and cancel open tasks and planned retries now."""
        await self._recall(why)
        await self._cancel_tasks(why)

    async def _waive(self, amounts: Balance, kind: str, key: str, reason: str) -> None:
        s = self._state
        await self._activity(
            LedgerActivities.waive,
            WaiverRequest(
                key=key,
                loan_id=s.loan.loan_id,
                at=self._now(),
                amounts=amounts,
                currency=s.loan.currency,
                kind=kind,
                reason=reason,
            ),
        )
        self._note(
            kind, channel="ledger", outcome="posted", key=key, detail=f"{amounts.total} {s.loan.currency}: {reason}"
        )
