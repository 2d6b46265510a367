"""The collection workflow (type `LoanCollection`): one long-lived run per overdue loan, a thin
shell around the decider (`models.lifecycle`).

The shell does three things and decides nothing:
- handlers validate a request with the decider's `check`, apply it with `decide` (synchronously:
  no activity, timer or patch in a handler), queue the commands it returns, answer, and wake the
  loop;
- the main loop runs the queued commands through activities, in order (a guard question on its
  own, consecutive effects as one batch), and feeds each result back to the decider as an event;
- when nothing is queued it sleeps until the decider's `next_wake` and feeds the time in.

So the order of commands in a workflow task depends only on the order of events in the history.
The loop's time is the history's time (a timer's target, an activity's finish), never a worker's
reading of the clock, and it continues as new (carrying the state) when the history grows long.
Loans started before this shell run `workflows/legacy/collection_v1.py` to their close.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import search_attributes as sa
    from activities.effects import EffectActivities
    from activities.guard import GuardActivities
    from activities.start import StartActivities
    from models import lifecycle
    from models.arrangements import (
        Decision,
        DisputeRequest,
        DisputeResolution,
        HardshipDecision,
        HardshipReport,
        PlanProposal,
        PromiseRequest,
        SettlementOffer,
        StopRequest,
    )
    from models.clock import real_delay, virtual_now
    from models.conduct import GuardDecision
    from models.effects import AskGuard, Command, Effect, EffectBatch, is_effect
    from models.events import AgencyContactRequest, AgencyReport, CourtReport, OptOutRequest, TaskReport
    from models.payment import Payment, PaymentReceipt
    from models.requests import PrepareRequest
    from models.status import CollectionInput, CollectionState, CollectionStatus

WORKFLOW_TYPE = "LoanCollection"
# Activities retry until the database (or the gateway) is back: a lost write is never acceptable.
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=2))
_TIMEOUT = timedelta(seconds=60)
HISTORY_CAP = 10_000
"""Events after which a run continues as new whatever the server's settings: the server's
suggestion comes at 4,096 by default (a setting a cluster may raise), and its hard limit
(51,200) terminates the run."""
_SHORTEST_SLEEP = timedelta(milliseconds=1)


class CollectionStarting(ValueError):
    """The loan is still loading its policy (its first activity): ask again in a moment."""


@workflow.defn(name=WORKFLOW_TYPE)
class CollectionWorkflow:
    @workflow.init
    def __init__(self, inp: CollectionInput) -> None:
        self._input = inp
        self._s: CollectionState | None = inp.state
        self._queue: list[Command] = []
        self._woken = False
        self._roll_over_asked = False
        self._early: list[lifecycle.Event] = []  # bank-feed payments that came before the start finished
        self._running = False  # an activity of the loop is in flight

    # ---------------------------------------------------------------- the loop

    @workflow.run
    async def run(self, inp: CollectionInput) -> CollectionStatus:
        if self._s is None:
            await self._begin(inp)
        while True:
            await self._drain()
            s = self._state
            self._sync_search()
            if s.closed_as is not None:
                break
            if self._roll_over_due():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue:
                    workflow.continue_as_new(CollectionInput(loan=s.loan, policy=inp.policy, state=s))
                continue
            await self._sleep_or_run_due(s)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return lifecycle.status(self._state, lifecycle.clock_of(self._state), workflow.info().workflow_id)

    async def _begin(self, inp: CollectionInput) -> None:
        """Pin the policy and rules and register the loan (one activity), then start deciding."""
        info = workflow.info()
        prepared = await workflow.execute_activity_method(
            StartActivities.prepare,
            PrepareRequest(loan=inp.loan, policy=inp.policy, workflow_id=info.workflow_id, started_at=info.start_time),
            start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY,
        )
        outcome = lifecycle.begin(inp.loan, prepared.policy, prepared.rules, prepared.started_at,
                                  workflow_id=info.workflow_id, search_ready=prepared.search_ready)
        self._s = outcome.state
        self._queue += outcome.commands
        for event in self._early:
            self._feed(event, self._request_time())
        self._early.clear()

    async def _sleep_or_run_due(self, s: CollectionState) -> None:
        """Run what is due by the loan's clock, else sleep until the next item (or a handler)."""
        clock = lifecycle.clock_of(s)
        wake = lifecycle.next_wake(s)
        if wake is not None and wake <= clock:  # due already (a request made it so, or time caught up)
            self._feed(lifecycle.TimeReached(at=clock), clock)
            return
        self._woken = False
        if wake is None:  # paused with nothing dated (a dispute, a stop): only a request moves it on
            await workflow.wait_condition(self._wake_condition)
            return
        try:
            await workflow.wait_condition(self._wake_condition, timeout=self._delay_until(wake))
        except asyncio.TimeoutError:
            self._feed(lifecycle.TimeReached(at=wake), wake)

    def _delay_until(self, wake: datetime) -> timedelta:
        """Real time to sleep until business time `wake` (at least a moment: timers are positive)."""
        s = self._state
        now = max(lifecycle.clock_of(s), virtual_now(workflow.now(), s.policy.clock))
        return max(real_delay(wake - now, s.policy.clock), _SHORTEST_SLEEP)

    def _wake_condition(self) -> bool:
        return self._woken or self._roll_over_due()

    def _roll_over_due(self) -> bool:
        """Continue as new: the server suggests it, an operator asked, or the history reached
        HISTORY_CAP."""
        info = workflow.info()
        return (info.is_continue_as_new_suggested() or self._roll_over_asked
                or info.get_current_history_length() >= HISTORY_CAP)

    async def _drain(self) -> None:
        """Run the queued commands in order until none is left (results may queue more)."""
        self._running = True
        try:
            await self._run_queue()
        finally:
            self._running = False

    async def _run_queue(self) -> None:
        while self._queue:
            if isinstance(self._queue[0], AskGuard):
                ask = self._queue.pop(0)
                assert isinstance(ask, AskGuard)
                decision: GuardDecision = await workflow.execute_activity_method(
                    GuardActivities.request_contact, ask.req, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY,
                )
                self._feed(lifecycle.GuardAnswered(key=ask.key, decision=decision),
                           decision.decided_at or lifecycle.clock_of(self._state))
                continue
            batch: list[Effect] = []
            while self._queue and is_effect(self._queue[0]):
                batch.append(self._queue.pop(0))  # type: ignore[arg-type]
            result = await workflow.execute_activity_method(
                EffectActivities.perform, EffectBatch(effects=batch), start_to_close_timeout=_TIMEOUT,
                retry_policy=_RETRY,
            )
            at = virtual_now(result.at, self._state.policy.clock)
            for effect, done in zip(batch, result.results, strict=True):
                self._feed(lifecycle.EffectDone(effect=effect, result=done), at)

    def _feed(self, event: lifecycle.Event, at: datetime) -> None:
        """Decide a loop event at `at` and queue its commands."""
        self._queue += lifecycle.decide(self._state, event, at).commands

    def _sync_search(self) -> None:
        """Keep the portfolio's search attributes current (only what changed is upserted); they
        carry no personal data."""
        s = self._state
        if not s.search_ready:
            return
        changed = lifecycle.search_changes(s, lifecycle.clock_of(s))
        if changed:
            keys = {key.name: key for key in sa.ALL}
            workflow.upsert_search_attributes([keys[name].value_set(value) for name, value in changed.items()])  # type: ignore[attr-defined]
            s.search_values.update(changed)

    # ---------------------------------------------------------------- handlers: they only record

    def _request_time(self) -> datetime:
        s = self._state
        return lifecycle.request_time(s, virtual_now(workflow.now(), s.policy.clock))

    def _check(self, event: lifecycle.Event) -> None:
        """Validator: refuse (nothing is written to history) what the loan would refuse."""
        if self._s is None:
            raise CollectionStarting("collection is starting; ask again in a moment")
        try:
            lifecycle.check(self._s, event, self._request_time())
        except lifecycle.Rejected as exc:
            raise ApplicationError(str(exc), type=exc.kind, non_retryable=True) from exc

    def _request(self, event: lifecycle.Event) -> Any:
        """Apply a request, queue its commands, wake the loop, answer."""
        try:
            outcome = lifecycle.decide(self._state, event, self._request_time())
        except lifecycle.Rejected as exc:  # checked by the validator; cannot change in between
            raise ApplicationError(str(exc), type=exc.kind, non_retryable=True) from exc
        self._queue += outcome.commands
        self._woken = True
        return outcome.reply

    @workflow.update
    def pay(self, payment: Payment) -> PaymentReceipt:
        """Apply a payment and answer with the receipt (the ledger rows follow at once)."""
        receipt: PaymentReceipt = self._request(lifecycle.PaymentReceived(payment=payment))
        return receipt

    @pay.validator
    def _check_pay(self, payment: Payment) -> None:
        self._check(lifecycle.PaymentReceived(payment=payment))

    @workflow.signal
    def payment_received(self, payment: Payment) -> None:
        """The same as `pay` for bank feeds, which cannot take an answer; a payment that cannot
        be applied is recorded as rejected."""
        event = lifecycle.PaymentReceived(payment=payment, answer=False)
        if self._s is None:
            self._early.append(event)
            return
        self._request(event)

    @workflow.signal
    def roll_over(self) -> None:
        """Continue as new at the next quiet moment (an operator's tool after a deploy)."""
        if self._s is None or self._s.closed_as is None:
            self._roll_over_asked = True

    @workflow.update
    def report_task(self, report: TaskReport) -> CollectionStatus:
        """A collector's or field agent's outcome for an open task."""
        self._request(lifecycle.TaskReported(report=report))
        return self._status()

    @report_task.validator
    def _check_report(self, report: TaskReport) -> None:
        self._check(lifecycle.TaskReported(report=report))

    @workflow.update
    def report_agency(self, report: AgencyReport) -> CollectionStatus:
        """A progress report from the agency that holds the account."""
        self._request(lifecycle.AgencyReported(report=report))
        return self._status()

    @report_agency.validator
    def _check_agency(self, report: AgencyReport) -> None:
        self._check(lifecycle.AgencyReported(report=report))

    @workflow.update
    def report_court(self, report: CourtReport) -> CollectionStatus:
        """News of the court case."""
        self._request(lifecycle.CourtReported(report=report))
        return self._status()

    @report_court.validator
    def _check_court(self, report: CourtReport) -> None:
        self._check(lifecycle.CourtReported(report=report))

    @workflow.update
    def ask_agency_contact(self, req: AgencyContactRequest) -> str:
        """An agency asks before it contacts the borrower. The guard's answer needs an activity,
        which a handler must not run: this records the request and answers with its key; the
        loop asks the guard and the answer is read with the `agency_contact_answer` query."""
        key = f"{req.placement_id}/{req.channel}/{workflow.uuid4()}"
        answer: str = self._request(lifecycle.AgencyContactAsked(request=req, key=key))
        return answer

    @ask_agency_contact.validator
    def _check_agency_contact(self, req: AgencyContactRequest) -> None:
        self._check(lifecycle.AgencyContactAsked(request=req, key=""))

    @workflow.query
    def agency_contact_answer(self, key: str) -> GuardDecision | None:
        """The guard's answer to an agency's request (None while it is being decided)."""
        return self._state.agency_answers.get(key) if self._s is not None else None

    @workflow.update
    def opt_out(self, req: OptOutRequest) -> Decision:
        """No more contact on this channel (the guard refuses it from now on)."""
        decision: Decision = self._request(lifecycle.OptedOut(request=req))
        return decision

    @opt_out.validator
    def _check_opt_out(self, req: OptOutRequest) -> None:
        self._check(lifecycle.OptedOut(request=req))

    @workflow.update
    def promise_to_pay(self, req: PromiseRequest) -> Decision:
        decision: Decision = self._request(lifecycle.PromiseMade(request=req))
        return decision

    @promise_to_pay.validator
    def _check_promise(self, req: PromiseRequest) -> None:
        self._check(lifecycle.PromiseMade(request=req))

    @workflow.update
    def propose_plan(self, req: PlanProposal) -> Decision:
        decision: Decision = self._request(lifecycle.PlanProposed(request=req))
        return decision

    @propose_plan.validator
    def _check_plan(self, req: PlanProposal) -> None:
        self._check(lifecycle.PlanProposed(request=req))

    @workflow.update
    def offer_settlement(self, offer: SettlementOffer) -> Decision:
        decision: Decision = self._request(lifecycle.SettlementOffered(request=offer))
        return decision

    @offer_settlement.validator
    def _check_settlement(self, offer: SettlementOffer) -> None:
        self._check(lifecycle.SettlementOffered(request=offer))

    @workflow.update
    def report_hardship(self, report: HardshipReport) -> Decision:
        decision: Decision = self._request(lifecycle.HardshipReported(request=report))
        return decision

    @report_hardship.validator
    def _check_hardship(self, report: HardshipReport) -> None:
        self._check(lifecycle.HardshipReported(request=report))

    @workflow.update
    def review_hardship(self, decision: HardshipDecision) -> Decision:
        """Apply the reviewer's decision (offer a plan, waive, extend, resume, write off)."""
        answer: Decision = self._request(lifecycle.HardshipReviewed(request=decision))
        return answer

    @review_hardship.validator
    def _check_review(self, decision: HardshipDecision) -> None:
        self._check(lifecycle.HardshipReviewed(request=decision))

    @workflow.update
    def raise_dispute(self, req: DisputeRequest) -> Decision:
        decision: Decision = self._request(lifecycle.DisputeRaised(request=req))
        return decision

    @raise_dispute.validator
    def _check_dispute(self, req: DisputeRequest) -> None:
        self._check(lifecycle.DisputeRaised(request=req))

    @workflow.update
    def resolve_dispute(self, res: DisputeResolution) -> Decision:
        """Upheld: the balance is cancelled and the loan closes; rejected: collection resumes."""
        decision: Decision = self._request(lifecycle.DisputeResolved(request=res))
        return decision

    @resolve_dispute.validator
    def _check_resolution(self, res: DisputeResolution) -> None:
        self._check(lifecycle.DisputeResolved(request=res))

    @workflow.update
    def stop_collection(self, req: StopRequest) -> Decision:
        """Bankruptcy, death or cease-contact: no more contact, legal review or write-off."""
        decision: Decision = self._request(lifecycle.StopRequested(request=req))
        return decision

    @stop_collection.validator
    def _check_stop(self, req: StopRequest) -> None:
        self._check(lifecycle.StopRequested(request=req))

    # ---------------------------------------------------------------- reading

    @workflow.update
    def current_status(self) -> CollectionStatus:
        """The status as of now (an update, so the workflow's clock is current; it records nothing)."""
        return self._status()

    @current_status.validator
    def _check_status(self) -> None:
        if self._s is None:
            raise CollectionStarting("collection is starting; ask again in a moment")

    @workflow.query
    def status(self) -> CollectionStatus:
        """The status as of the workflow's last task (free; writes no history)."""
        if self._s is None:
            raise ApplicationError("collection is starting; ask again in a moment")
        return self._status()

    @workflow.query
    def busy(self) -> bool:
        """Whether effects are queued or running (a request's answer comes before its effects
        are written; tools that read the database right after wait for this to turn False)."""
        return self._running or bool(self._queue) or self._s is None

    @workflow.query
    def state(self) -> CollectionState:
        """Everything the loan knows (tools, the simulator's fidelity test)."""
        if self._s is None:
            raise ApplicationError("collection is starting; ask again in a moment")
        return self._s

    @property
    def _state(self) -> CollectionState:
        assert self._s is not None, "state is set before any handler or step runs"
        return self._s

    def _status(self) -> CollectionStatus:
        return lifecycle.status(self._state, self._request_time(), workflow.info().workflow_id)
