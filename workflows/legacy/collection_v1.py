"""The first collection workflow (type `CollectionWorkflow`), frozen: loans started before the
decider run it to their close. Do not change what it does (tests/replay/test_replay.py replays its
recorded histories); new behaviour goes to workflows/collection.py.

The collection workflow: one long-lived run per overdue loan.

It sleeps until the next thing is due (a ladder step, a fee period, a stage change, a task's
outcome deadline, a call retry, the agency recall, the end of recovery), does it through an
activity, records it and sleeps again. Payments, task outcomes and partner reports arrive as
updates (signals for bank feeds) and wake it. All state sits in one `CollectionState`, so a
pause, an arrangement or a contact guard is one more source of due items, not a rewrite.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.legacy.negotiation_v1 import Negotiation

with workflow.unsafe.imports_passed_through():
    from activities.admin import AdminActivities
    from activities.guard import GuardActivities
    from activities.handover import HandoverActivities
    from activities.ledger import LedgerActivities
    from activities.messaging import MessagingActivities
    from activities.records import RecordActivities
    from activities.tasks import TaskActivities
    from infra import search_attributes as sa
    from models.allocation import allocate
    from models.arrangements import ArrangementRejected, Decision, Plan
    from models.clock import real_delay, virtual_now
    from models.conduct import ContactRequest, GuardDecision, Situation
    from models.context import template_context
    from models.events import (
        AgencyContactRequest,
        AgencyReport,
        CourtReport,
        OptOutRequest,
        TaskReport,
        TimelineEntry,
    )
    from models.fees import fee_for_period
    from models.loan import Balance, Stage
    from models.money import minor_units
    from models.negotiation import (
        arrangement_info,
        credit_payments,
        days_between,
        judge_instalment,
        judged_at,
        pause_reason,
    )
    from models.payment import Payment, PaymentReceipt, PaymentRejected, check_payment
    from models.policy import Action, LadderStep, Policy
    from models.requests import (
        AuditEvent,
        CaseRequest,
        ChargeOffRequest,
        FeeRequest,
        GuardRequest,
        LoanRegistration,
        MessageRequest,
        PaymentRecord,
        PlacementRequest,
        RecallRequest,
        TaskClosure,
        TaskRequest,
    )
    from models.schedule import (
        PlannedAction,
        action_time,
        at_local,
        build_plan,
        catch_up,
        days_past_due,
        local_date,
        next_contact_moment,
        stage_for_dpd,
    )
    from models.status import (
        CaseInfo,
        CollectionInput,
        CollectionState,
        CollectionStatus,
        DeferredContact,
        OpenTask,
        PlacementInfo,
    )

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    _Self = TypeVar("_Self")
    _Arg = TypeVar("_Arg")
    _Result = TypeVar("_Result")

# Database activities retry until the database is back; a lost write is never acceptable.
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=2))
_TIMEOUT = timedelta(seconds=60)
_CHANNEL_FIELD = {"sms": "phone", "email": "email", "letter": "address"}
# Loans started before the conduct guard existed take it on at their next contact.
CONDUCT_PATCH = "conduct-guard-1"
# ... and the portfolio's search attributes from their next run (continue-as-new) on.
SEARCH_PATCH = "search-attributes-1"
# ... and continue as new at HISTORY_CAP events even if the server never suggests it.
HISTORY_CAP_PATCH = "history-cap-1"
HISTORY_CAP = 10_000
"""Events after which a run continues as new whatever the server's settings: the server's
suggestion comes at 4,096 by default (a setting a cluster may raise), and its hard limit
(51,200) terminates the run."""
# Throughput (issue 5): the start and the closing housekeeping run their short, idempotent
# steps as local activities (inside the workflow task, no round trip through the server), each
# with its business key as before. Never an update handler: a local activity runs before the
# server has taken the workflow task, and an update whose task fails is dropped, so its side
# effects must wait for a scheduled activity. One patch for both places (`patched` is memoized
# per run): a new run records its marker once, at the start; a run that began before it keeps
# scheduled activities to its end, except a run continued as new, which takes it at its close.
LOCAL_PATCH = "local-steps-1"
_LOCAL: ContextVar[bool] = ContextVar("local_steps", default=False)
"""Set in the run's own task while it closes; handlers run in tasks of their own."""
# A loan closed by a handler while the loop awaited `_sync_search` ran one more ladder item
# (a late fee after the payment in full; found by tests/system/test_crash.py): re-check from now on.
CLOSED_RECHECK_PATCH = "closed-recheck-1"
# ... and a collection contact the guard allowed while the loan was paid, settled, disputed or
# put on hold meanwhile (a handler ran during the guard's activity) is not made.
OVERTAKEN_PATCH = "guard-overtaken-1"
_CONTACTS = (Action.message, Action.call, Action.field_visit)


@dataclass(frozen=True)
class _Due:
    """The next thing the loop will do, and when."""

    at: datetime
    kind: str  # plan | catch_up | task_timeout | retry | recall | recovery_end
    label: str
    ref: str = ""


@workflow.defn(name="CollectionWorkflow")
class LegacyCollectionWorkflow(Negotiation):
    @workflow.init
    def __init__(self, inp: CollectionInput) -> None:
        self._input = inp
        self._s: CollectionState | None = inp.state
        self._plan: list[PlannedAction] = build_plan(inp.state.policy, inp.state.loan) if inp.state else []
        self._wake = False
        self._actor = "workflow"  # who caused the latest change, for pause/resume entries
        self._roll_over_asked = False  # an operator asked for continue-as-new (see roll_over)
        self._floor: datetime | None = None  # business time is at least this (see _now)
        self._cap_declined = True  # a run recorded before HISTORY_CAP_PATCH has no cap

    # ---------------------------------------------------------------- run loop

    @workflow.run
    async def run(self, inp: CollectionInput) -> CollectionStatus:
        # Decided once per run, as its first command (before the start's local activities):
        # runs recorded before the cap replay as they ran.
        self._cap_declined = not workflow.patched(HISTORY_CAP_PATCH)
        if self._s is None:
            await self._begin(inp)
        state = self._state
        while state.closed_as is None:
            if self._roll_over_due():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(CollectionInput(loan=state.loan, policy=inp.policy, state=state))
            await self._sync_pause()
            if state.closed_as is not None:  # closed by a handler while the pause was recorded
                break
            await self._sync_search()
            if state.closed_as is not None and workflow.patched(CLOSED_RECHECK_PATCH):
                break  # paid while the search attributes were registered: nothing more is due
            due = self._next_due()
            if due is None:  # paused with nothing dated (a dispute, a stop): wait for a handler
                self._wake = False
                await workflow.wait_condition(self._woken)
            elif due.at > self._now():
                await self._sleep_until(due.at)  # then look again: a handler may have changed things
            else:
                await self._run_due(due)
        await self._finish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status()

    async def _begin(self, inp: CollectionInput) -> None:
        """Load the policy (pinned for the loan's life), register the loan, join the plan.
        New runs do it all in their first workflow task (local activities), the portfolio's
        search attributes checked before the registration, so the loan row is the last step."""
        local = workflow.patched(LOCAL_PATCH)
        policy: Policy = await self._activity(RecordActivities.load_policy, inp.policy, local=local)
        now = self._now(policy)
        loan = inp.loan
        state = CollectionState(
            loan=loan, policy=policy, started_at=now, balance=loan.balance(), penalties_posted=loan.penalties
        )
        self._plan = build_plan(policy, loan)
        dpd = days_past_due(now, loan.due_date, loan.borrower.timezone)
        state.cursor, behind = catch_up(self._plan, dpd)
        state.catch_up_key = behind.key if behind else None
        self._s = state
        self._note("collection_started", outcome=f"DPD {dpd}", detail=f"policy {policy.name} {policy.version}")
        if local:
            state.search_ready = await workflow.execute_local_activity_method(
                AdminActivities.ensure_search_attributes, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY
            )
        await self._activity(
            RecordActivities.register_loan,
            LoanRegistration(
                loan=loan,
                policy=policy.name,
                policy_version=policy.version,
                workflow_id=workflow.info().workflow_id,
                stage=self._stage(),
                at=now,
            ),
            local=local,
        )

    def _woken(self) -> bool:
        """Why the loop stops waiting: a handler changed something, the loan closed, or the
        history grew enough (status calls, reports) that it should continue as new."""
        return self._wake or self._state.closed_as is not None or self._roll_over_due()

    def _roll_over_due(self) -> bool:
        """Whether the run should continue as new: the server suggests it, an operator asked,
        or the history reached HISTORY_CAP (unless this run predates the cap)."""
        info = workflow.info()
        capped = not self._cap_declined and info.get_current_history_length() >= HISTORY_CAP
        return info.is_continue_as_new_suggested() or self._roll_over_asked or capped

    async def _sleep_until(self, at: datetime) -> None:
        """Sleep until `at`, or until a handler changes something and sets `_wake`."""
        self._wake = False
        try:
            await workflow.wait_condition(self._woken, timeout=real_delay(at - self._now(), self._state.policy.clock))
        except asyncio.TimeoutError:
            # The timer fired, so it is at least `at`, whatever workflow.now() says (see _now).
            self._floor = at if self._floor is None else max(self._floor, at)

    def _next_due(self) -> _Due | None:
        """The earliest pending item among all sources of work. On a tie the order below
        decides: the agency recall and overdue task outcomes come before new contacts.
        While escalation is paused the ladder (steps, fees, stages, write-off) waits; while
        a hold or stop lasts, arrangement dates wait too."""
        s, now = self._state, self._now()
        items: list[_Due] = []
        if s.placement is not None:
            items.append(_Due(s.placement.recall_at, "recall", f"agency recall: {s.placement.agency}"))
        items += [_Due(t.deadline, "task_timeout", f"outcome due: {t.task_id}", t.task_id) for t in s.open_tasks]
        items += [_Due(d.at, "deferred", f"deferred {d.channel} contact: {d.key}", d.key) for d in s.deferred]
        if s.paused_reason is None and s.charged_off_at is None:
            items += self._ladder_items()
        if not s.holds and s.stop is None:
            items += self._arrangement_items()
        hardship = s.hold("hardship")
        if hardship is not None and hardship.until is not None:
            items.append(_Due(hardship.until, "hardship_end", "end of the breathing space"))
        if s.charged_off_at is not None:
            end = s.charged_off_at + timedelta(days=s.policy.recovery_days)
            items.append(_Due(max(end, now), "recovery_end", "end of recovery"))
        return min(items, key=lambda d: d.at) if items else None

    def _ladder_items(self) -> list[_Due]:
        s = self._state
        items: list[_Due] = []
        if s.catch_up_key is not None:
            at = self._contact_time(s.started_at)
            items.append(_Due(at, "catch_up", s.catch_up_key.removeprefix("step:"), s.catch_up_key))
        if s.cursor < len(self._plan):
            action = self._plan[s.cursor]
            at = action_time(action, s.loan, s.policy, s.paused_days)
            if action.step is not None and action.step.action in _CONTACTS:
                at = self._contact_time(at)
            items.append(_Due(at, "plan", action.key.removeprefix("step:")))
        items += [
            _Due(self._contact_time(r.deadline), "retry", f"{r.kind} retry {r.attempt}: {r.step_key}", r.task_id)
            for r in s.retries
        ]
        return items

    def _arrangement_items(self) -> list[_Due]:
        """Dated checks of the open arrangements (their dates move on by the days of holds)."""
        s, now = self._state, self._now()
        items: list[_Due] = []
        pr, plan, st = s.open_promise(), s.active_plan(), s.open_settlement()
        if pr is not None:
            at = judged_at(s, pr.due, s.policy.promise.grace_days, pr.held_at_start, now)
            items.append(_Due(at, "promise_check", f"promise due {pr.due}", pr.promise_id))
        inst = plan.next_open() if plan is not None else None
        if plan is not None and inst is not None:
            at = judged_at(s, inst.due, s.policy.plan.grace_days, plan.held_at_start, now)
            items.append(_Due(at, "instalment_check", f"instalment {inst.number} due {inst.due}", plan.plan_id))
            if not inst.reminded:
                day = inst.due - timedelta(days=s.policy.plan.reminder_days_before)
                at = self._contact_time(at_local(day, s.policy.contact.send_at, s.loan.borrower.timezone))
                items.append(_Due(at, "plan_reminder", f"reminder of instalment {inst.number}", plan.plan_id))
        if st is not None:
            at = judged_at(s, st.deadline, 0, st.held_at_start, now)
            items.append(_Due(at, "settlement_lapse", f"settlement deadline {st.deadline}", st.offer_id))
        return items

    async def _run_deferred(self, key: str) -> None:
        """Ask the guard again for a contact it deferred to now."""
        s = self._state
        d = next(x for x in s.deferred if x.key == key)
        s.deferred.remove(d)
        if d.kind == "message":
            await self._send(d.what, d.template, d.channel, d.deadline_days, d.extra, d.purpose)
        else:
            step = next(a.step for a in self._plan if a.key == f"step:{d.step_key}")
            assert step is not None
            await self._create_task(step, d.attempt)

    async def _ask_guard(self, channel: str, purpose: str, key: str, what: str) -> GuardDecision | None:
        """The conduct guard's decision for a contact (None for runs from before the guard)."""
        s = self._state
        if s.rules is None:
            if not workflow.patched(CONDUCT_PATCH):
                return None
            s.rules = await self._activity(RecordActivities.load_conduct_rules, s.policy.conduct)
        contact = ContactRequest(
            borrower_id=s.loan.borrower.borrower_id,
            loan_id=s.loan.loan_id,
            channel=channel,
            purpose=purpose,
            at=self._now(),
            timezone=s.loan.borrower.timezone,
            key=key,
        )
        decision: GuardDecision = await self._activity(
            GuardActivities.request_contact, GuardRequest(contact=contact, rules=s.rules, situation=self._situation())
        )
        if decision.verdict != "refused" and self._overtaken(purpose) and workflow.patched(OVERTAKEN_PATCH):
            why = f"loan {s.closed_as}" if s.closed_as is not None else f"paused: {pause_reason(s)}"
            decision = GuardDecision(
                verdict="refused", rule="GEN-OVERTAKEN", at=self._now(), reason=f"{why} while the guard decided"
            )
        if decision.verdict != "allowed":
            until = f" until {decision.at:%Y-%m-%d %H:%M}" if decision.verdict == "deferred" else ""
            self._note(
                what,
                channel=channel,
                outcome=decision.verdict,
                key=key,
                detail=f"{decision.rule}{until}: {decision.reason}",
            )
        return decision

    def _overtaken(self, purpose: str) -> bool:
        """Whether a contact has lost its reason during an await: the loan closed (anything but
        a transactional message), or escalation paused (a dispute, an arrangement, a hold, a
        stop) for an escalation contact."""
        s = self._state
        if purpose == "transactional":
            return False
        return s.closed_as is not None or (purpose == "escalation" and pause_reason(s) is not None)

    async def _sync_search(self) -> None:
        """Keep the portfolio's search attributes current (only what changed is upserted).
        They carry no personal data: stage, DPD band, policy, agency, currency, amount."""
        s = self._state
        if s.search_ready is None:
            if not workflow.patched(SEARCH_PATCH):
                return
            s.search_ready = await workflow.execute_activity_method(
                AdminActivities.ensure_search_attributes, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY
            )
        if not s.search_ready:
            return
        values: dict[str, str | int] = {
            sa.STAGE.name: str(self._stage()),
            sa.DPD_BAND.name: sa.dpd_band(self._dpd()),
            sa.POLICY.name: s.policy.name,
            sa.AGENCY.name: s.placement.agency if s.placement else "",
            sa.CURRENCY.name: s.loan.currency,
            sa.OUTSTANDING.name: int(s.balance.total.scaleb(minor_units(s.loan.currency))),
        }
        changed = {name: value for name, value in values.items() if s.search_values.get(name) != value}
        if changed:
            keys = {key.name: key for key in sa.ALL}
            # Frozen code: each value has its key's type (paired by name, which mypy cannot follow);
            # new code uses the typed sa.value_set, which this run's statements must not change to.
            workflow.upsert_search_attributes(
                [keys[name].value_set(value) for name, value in changed.items()]  # type: ignore[arg-type]
            )
            s.search_values.update(changed)

    def _situation(self) -> Situation:
        s = self._state
        return Situation(
            stopped=s.stop is not None,
            held=bool(s.holds),
            paused=s.paused_reason is not None,
            opted_out=list(s.opted_out),
        )

    def _contact_time(self, planned: datetime) -> datetime:
        """When a contact planned for `planned` may happen: not before now, and inside the
        borrower's contact window (a late timer at 23:00 waits for the morning)."""
        s = self._state
        return next_contact_moment(max(planned, self._now()), s.policy, s.loan.borrower.timezone)

    async def _run_due(self, due: _Due) -> None:
        s = self._state
        if due.kind == "plan":
            action = self._plan[s.cursor]
            await self._run_planned(action)
            s.cursor += 1
        elif due.kind == "catch_up":
            s.catch_up_key = None
            action = next(a for a in self._plan if a.key == due.ref)
            assert action.step is not None
            await self._run_step(action.step, attempt=1)
        elif due.kind == "task_timeout":
            await self._task_timed_out(due.ref)
        elif due.kind == "deferred":
            await self._run_deferred(due.ref)
        elif due.kind == "retry":
            retry = next(r for r in s.retries if r.task_id == due.ref)
            s.retries.remove(retry)
            step = next(a.step for a in self._plan if a.key == f"step:{retry.step_key}")
            assert step is not None
            await self._run_step(step, attempt=retry.attempt)
        elif due.kind == "recall":
            await self._recall("agency period ended")
        elif due.kind == "recovery_end":
            s.closed_as = Stage.written_off
            self._note("recovery_ended", outcome="closed as written off")
        else:
            await self._run_arrangement_due(due)

    async def _run_arrangement_due(self, due: _Due) -> None:
        s = self._state
        notes: list[tuple[str, str, str]] = []
        if due.kind == "promise_check" and s.promise is not None:
            s.promise.status = "broken"
            s.counts.promises_broken += 1
            notes.append(("promise", "broken", f"{s.promise.amount} not paid by {s.promise.due}"))
        elif due.kind == "instalment_check" and s.plan is not None:
            notes = judge_instalment(s, s.plan, s.policy.plan.max_missed)
        elif due.kind == "plan_reminder" and s.plan is not None:
            await self._remind_instalment(s.plan)
        elif due.kind == "settlement_lapse" and s.settlement is not None:
            s.settlement.status = "lapsed"
            s.counts.settlements_lapsed += 1
            notes.append(("settlement", "lapsed", f"{s.settlement.amount} not paid by {s.settlement.deadline}"))
        elif due.kind == "hardship_end":
            await self._end_breathing_space()
        await self._record_notes(notes, due.ref)

    async def _remind_instalment(self, plan: Plan) -> None:
        inst = plan.next_open()
        assert inst is not None  # the reminder is due only while an instalment is open
        inst.reminded = True
        s = self._state
        await self._send(
            f"{plan.plan_id.removeprefix(s.loan.loan_id + '/')}/reminder/{inst.number}",
            "plan_reminder",
            "sms",
            purpose="arrangement",
            extra={
                "instalment_number": str(inst.number),
                "instalment_amount": f"{inst.amount:,}",
                "instalment_due": inst.due.isoformat(),
            },
        )

    async def _end_breathing_space(self) -> None:
        s = self._state
        hold = s.hold("hardship")
        assert hold is not None
        s.holds.remove(hold)
        self._actor = "workflow"
        self._note(
            "hardship", outcome="ended", key=hold.review_task_id, detail="breathing space over, no review outcome"
        )
        await self._activity(
            TaskActivities.close_task,
            TaskClosure(
                task_id=hold.review_task_id,
                loan_id=s.loan.loan_id,
                at=self._now(),
                outcome="timeout",
                note="breathing space ended before a review outcome",
            ),
        )
        await self._record(f"{hold.review_task_id}/ended", "hardship_ended")

    async def _record_notes(self, notes: list[tuple[str, str, str]], ref: str) -> None:
        for action, outcome, detail in notes:
            self._note(action, outcome=outcome, key=ref, detail=detail)
            await self._record(
                f"{ref}/{action}-{outcome}/{len(self._state.timeline)}", f"{action}_{outcome}", detail=detail
            )

    async def _sync_pause(self) -> None:
        """Start or end the pause (and the hold clock) to match the state, on the timeline
        with the reason and who caused it. Days paused are not days past due."""
        s, now = self._state, self._now()
        tz = s.loan.borrower.timezone
        holding = bool(s.holds) or s.stop is not None
        if holding and s.hold_started_at is None:
            s.hold_started_at = now
        elif not holding and s.hold_started_at is not None:
            s.held_days += days_between(s.hold_started_at, now, tz)
            s.hold_started_at = None
        reason = pause_reason(s) if s.closed_as is None else None
        if reason == s.paused_reason:
            return
        if s.paused_reason is None:
            s.pause_started_at = now
            s.retries.clear()
            s.deferred = [d for d in s.deferred if d.purpose != "escalation"]
            self._note("paused", outcome=reason or "", detail=f"by {self._actor}")
        elif reason is None:
            assert s.pause_started_at is not None
            days = days_between(s.pause_started_at, now, tz)
            s.paused_days += days
            s.pause_started_at = None
            self._note("resumed", outcome=f"{days} day(s) paused", detail=f"by {self._actor}")
        else:
            self._note("paused", outcome=reason, detail=f"by {self._actor}")
        s.paused_reason = reason
        await self._record(
            f"pause/{len(s.timeline)}", "paused" if reason else "resumed", self._actor, reason=reason or ""
        )
        self._actor = "workflow"

    async def _run_planned(self, action: PlannedAction) -> None:
        if action.kind == "stage":
            self._note("stage_changed", outcome=str(action.stage), key=action.key)
            await self._record(action.key, "stage_changed")
        elif action.kind == "fee":
            await self._post_fee(action)
        elif action.kind == "step":
            assert action.step is not None
            await self._run_step(action.step, attempt=1)
        elif action.kind == "write_off":
            await self._write_off()

    # ---------------------------------------------------------------- ladder steps

    async def _run_step(self, step: LadderStep, attempt: int) -> None:
        if step.action is Action.message:
            for channel in step.channels:
                if self._state.closed_as is not None:
                    break  # paid while the previous channel was sending
                await self._send(step.key, step.template, channel, step.deadline_days)
        elif step.action in (Action.call, Action.field_visit):
            await self._create_task(step, attempt)
        elif step.action is Action.agency:
            await self._place(step)
        elif step.action is Action.litigation:
            await self._file_case(step)

    async def _send(
        self,
        what: str,
        template: str,
        channel: str,
        deadline_days: int | None = None,
        extra: dict[str, str] | None = None,
        purpose: str = "escalation",
    ) -> None:
        """Send one message once the guard allows it; `what` (the step key) makes the
        idempotency key. A deferred message is queued for the guard's moment."""
        s = self._state
        key = f"{s.loan.loan_id}/{what}/{channel}"
        recipient = self._recipient(channel, purpose)
        if not recipient:
            self._note(template, channel=channel, outcome="skipped", key=key, detail=f"no {channel} address")
            return
        decision = await self._ask_guard(channel, purpose, key, template)
        if decision is not None and decision.verdict == "deferred":
            s.deferred.append(
                DeferredContact(
                    key=key,
                    kind="message",
                    purpose=purpose,
                    channel=channel,
                    at=decision.at,
                    what=what,
                    template=template,
                    deadline_days=deadline_days,
                    extra=extra or {},
                )
            )
        if decision is not None and decision.verdict != "allowed":
            return
        req = MessageRequest(
            key=key,
            loan_id=s.loan.loan_id,
            at=self._now(),
            channel=channel,
            template=template,
            language=s.loan.borrower.language,
            recipient=recipient,
            context=self._context(deadline_days, **(extra or {})),
        )
        ok = await self._try(MessagingActivities.send_message, req, key)
        self._note(template, channel=channel, outcome="sent" if ok else "failed", key=key)

    def _recipient(self, channel: str, purpose: str) -> str:
        """The borrower's address for the channel; for `locate`, the first third party's phone."""
        borrower = self._state.loan.borrower
        if purpose == "locate":
            return borrower.third_parties[0].phone if borrower.third_parties else ""
        return str(getattr(borrower, _CHANNEL_FIELD[channel]))

    async def _create_task(self, step: LadderStep, attempt: int) -> None:
        s, now = self._state, self._now()
        key = f"{s.loan.loan_id}/{step.key}/{attempt}"
        channel = "phone" if step.action is Action.call else "visit"
        decision = await self._ask_guard(channel, "escalation", key, f"{step.action}_task")
        if decision is not None and decision.verdict == "deferred":
            s.deferred.append(
                DeferredContact(
                    key=key,
                    kind="task",
                    purpose="escalation",
                    channel=channel,
                    at=decision.at,
                    step_key=step.key,
                    attempt=attempt,
                )
            )
        if decision is not None and decision.verdict != "allowed":
            return
        deadline = now + timedelta(hours=step.outcome_timeout_hours)
        req = TaskRequest(
            key=key,
            loan_id=s.loan.loan_id,
            at=now,
            workflow_id=workflow.info().workflow_id,
            kind=str(step.action),
            queue=step.queue,
            template=step.template,
            language=s.loan.borrower.language,
            attempt=attempt,
            due_by=deadline,
            context=self._context(step.deadline_days, attempt=str(attempt)),
        )
        ok = await self._try(TaskActivities.create_task, req, key)
        self._note(
            f"{step.action}_task",
            channel=channel,
            outcome="created" if ok else "failed",
            key=key,
            detail=f"attempt {attempt}, queue {step.queue}",
        )
        if ok:
            s.open_tasks.append(
                OpenTask(
                    task_id=key,
                    kind=str(step.action),
                    step_key=step.key,
                    attempt=attempt,
                    queue=step.queue,
                    deadline=deadline,
                )
            )

    async def _place(self, step: LadderStep) -> None:
        s, now = self._state, self._now()
        key = f"{s.loan.loan_id}/{step.key}"
        # the recall falls at send time on the last day, so it comes before that day's steps
        tz = s.loan.borrower.timezone
        recall_at = at_local(
            local_date(now, tz) + timedelta(days=s.policy.agency.period_days), s.policy.contact.send_at, tz
        )
        agency = s.policy.agency.name
        req = PlacementRequest(
            key=key,
            loan_id=s.loan.loan_id,
            at=now,
            agency=agency,
            recall_at=recall_at,
            balance=s.balance,
            currency=s.loan.currency,
            template=step.template,
            language=s.loan.borrower.language,
            context=self._context(None, agency=agency, recall_date=recall_at.date().isoformat()),
        )
        ok = await self._try(HandoverActivities.place_with_agency, req, key)
        self._note(
            "agency_placement",
            channel="agency",
            outcome="placed" if ok else "failed",
            key=key,
            detail=f"{agency} until {recall_at:%Y-%m-%d}",
        )
        if ok:
            s.placement = PlacementInfo(placement_id=key, agency=agency, placed_at=now, recall_at=recall_at)

    async def _recall(self, reason: str) -> None:
        s = self._state
        placement = s.placement
        if placement is None:
            return
        s.placement = None
        req = RecallRequest(placement_id=placement.placement_id, loan_id=s.loan.loan_id, at=self._now(), reason=reason)
        await self._activity(HandoverActivities.recall_from_agency, req)
        self._note("agency_recall", channel="agency", outcome="recalled", key=placement.placement_id, detail=reason)

    async def _file_case(self, step: LadderStep) -> None:
        s = self._state
        key = f"{s.loan.loan_id}/{step.key}"
        req = CaseRequest(
            key=key,
            loan_id=s.loan.loan_id,
            at=self._now(),
            balance=s.balance,
            currency=s.loan.currency,
            template=step.template,
            language=s.loan.borrower.language,
            context=self._context(None),
        )
        ok = await self._try(HandoverActivities.file_case, req, key)
        self._note("litigation", channel="court", outcome="filed" if ok else "failed", key=key)
        if ok:
            s.case = CaseInfo(case_id=key, filed_at=self._now())

    # ---------------------------------------------------------------- money

    async def _post_fee(self, action: PlannedAction) -> None:
        """Post one period's late fee. The balance changes before the activity runs, so a
        payment arriving meanwhile is allocated against the fee too; the key makes it once."""
        s = self._state
        assert action.period is not None
        amount = fee_for_period(s.policy.late_fee, s.balance, s.penalties_posted, s.loan.principal, s.loan.currency)
        key = f"{s.loan.loan_id}/fee/{action.period}"
        if amount <= 0:
            self._note("late_fee", channel="ledger", outcome="capped", key=key, detail=f"period {action.period}")
            return
        s.balance = s.balance.with_component("penalties", s.balance.penalties + amount)
        s.penalties_posted += amount
        self._note(
            "late_fee",
            channel="ledger",
            outcome="posted",
            key=key,
            detail=f"period {action.period}: {amount} {s.loan.currency}",
        )
        req = FeeRequest(
            key=key,
            loan_id=s.loan.loan_id,
            period=action.period,
            amount=amount,
            currency=s.loan.currency,
            at=self._now(),
        )
        await self._activity(LedgerActivities.post_fee, req)

    async def _write_off(self) -> None:
        s = self._state
        s.charged_off_at = self._now()
        s.cursor = len(self._plan)  # nothing of the ladder runs after a charge-off
        key = f"{s.loan.loan_id}/write-off"
        self._note(
            "write_off", channel="ledger", outcome="charged_off", key=key, detail=f"{s.balance.total} {s.loan.currency}"
        )
        await self._activity(
            LedgerActivities.charge_off,
            ChargeOffRequest(
                key=key,
                loan_id=s.loan.loan_id,
                balance=s.balance,
                currency=s.loan.currency,
                at=s.charged_off_at,
            ),
        )
        await self._record("written-off", "written_off")
        await self._cancel_tasks("written off")

    def _apply_payment(self, payment: Payment) -> tuple[PaymentReceipt, list[tuple[str, str, str]], Balance]:
        """Allocate and apply a checked payment to the state at once (no await), so two
        payments can never be allocated against the same balance. Returns the receipt, what
        the payment fulfilled (promise, instalments, settlement) and what a paid settlement
        waives."""
        s = self._state
        allocation, s.balance = allocate(payment.amount, s.balance, s.policy.allocation_order)
        s.paid_total += allocation.applied()
        s.payment_ids.append(payment.payment_id)
        key = f"{s.loan.loan_id}/payment/{payment.payment_id}"
        self._note(
            "payment",
            channel=payment.source,
            outcome="applied",
            key=key,
            detail=f"{payment.amount} {payment.currency}; left {s.balance.total}",
        )
        credited = credit_payments(s)
        for action, outcome, detail in credited:
            self._note(action, outcome=outcome, key=key, detail=detail)
        waived = Balance()
        if s.settlement is not None and s.settlement.status == "paid":
            waived = self._settle()
        elif s.balance.total == 0:
            s.closed_as, s.closed_at = Stage.paid, self._now()
        self._wake = True
        receipt = PaymentReceipt(
            loan_id=s.loan.loan_id,
            payment_id=payment.payment_id,
            amount=payment.amount,
            currency=payment.currency,
            allocation=allocation,
            outstanding=s.balance,
            paid_total=s.paid_total,
            stage=self._stage(),
            closed=s.closed_as is not None,
            received_at=self._now(),
        )
        return receipt, credited, waived

    async def _take_payment(self, payment: Payment) -> PaymentReceipt:
        await workflow.wait_condition(lambda: self._s is not None)
        s = self._state
        try:
            check_payment(payment, s.loan.currency, s.payment_ids, s.closed_as)
        except PaymentRejected as exc:
            raise ApplicationError(str(exc), type="PaymentRejected", non_retryable=True) from exc
        receipt, credited, waived = self._apply_payment(payment)
        key = f"{s.loan.loan_id}/payment/{payment.payment_id}"
        await self._activity(
            LedgerActivities.record_payment,
            PaymentRecord(
                key=key,
                loan_id=s.loan.loan_id,
                at=self._now(),
                payment=payment,
                allocation=receipt.allocation,
                balance_after=receipt.outstanding,
            ),
        )
        for action, outcome, detail in credited:
            await self._record(f"{key}/{action}-{outcome}", f"{action}_{outcome}", detail=detail)
        if waived.total > 0 and s.settlement is not None:
            await self._waive(waived, "waiver", f"{s.settlement.offer_id}/waiver", "settlement paid")
        return receipt

    def _settle(self) -> Balance:
        """The settlement is paid: close the loan as settled; returns the balance to waive."""
        s = self._state
        waived, s.balance = s.balance, Balance()
        s.closed_as, s.closed_at = Stage.settled, self._now()
        if plan := s.active_plan():
            plan.status = "settled"
        if promise := s.open_promise():
            promise.status = "superseded"
        return waived

    # ---------------------------------------------------------------- tasks

    async def _task_timed_out(self, task_id: str) -> None:
        task = next(t for t in self._state.open_tasks if t.task_id == task_id)
        await self._close_task(task, "timeout", "no outcome reported in time", "workflow")

    async def _close_task(self, task: OpenTask, outcome: str, note: str, by: str, recording: str = "") -> None:
        """Close a task and, if the borrower was not reached, plan the next attempt."""
        s = self._state
        s.open_tasks.remove(task)
        step = next((a.step for a in self._plan if a.key == f"step:{task.step_key}"), None)
        reached = outcome in ("answered", "promised", "refused")
        if (
            step is not None
            and not reached
            and outcome != "wrong_number"
            and task.attempt < step.attempts
            and s.closed_as is None
            and s.charged_off_at is None
        ):
            at = next_contact_moment(
                self._now() + timedelta(hours=step.retry_after_hours), s.policy, s.loan.borrower.timezone
            )
            s.retries.append(task.model_copy(update={"attempt": task.attempt + 1, "deadline": at}))
        self._note(
            f"{task.kind}_outcome",
            channel="phone" if task.kind == "call" else "visit",
            outcome=outcome,
            key=task.task_id,
            detail=note,
        )
        self._wake = True
        await self._activity(
            TaskActivities.close_task,
            TaskClosure(
                task_id=task.task_id,
                loan_id=s.loan.loan_id,
                at=self._now(),
                outcome=outcome,
                note=note,
                recording_ref=recording,
                closed_by=by,
            ),
        )
        if reached and s.rules is not None:  # a conversation: the caps and quiet periods count it
            await self._activity(GuardActivities.record_conversation, task.task_id)
        located = any(e.action == "locate_request" for e in s.timeline)
        if outcome == "wrong_number" and s.loan.borrower.third_parties and s.rules is not None and not located:
            # the borrower cannot be reached: ask a third party, once, to pass on a call-back
            # request; the template names neither the debt nor the lender
            await self._send("locate", "locate_request", "sms", purpose="locate")

    async def _cancel_tasks(self, reason: str) -> None:
        s = self._state
        s.retries.clear()
        s.deferred.clear()
        for task in list(s.open_tasks):
            await self._close_task(task, "cancelled", reason, "workflow")

    async def _finish(self) -> None:
        """Closing housekeeping: cancel tasks, recall the agency, confirm payment in full.
        New runs do it in one workflow task of local activities, once the handler that closed
        the loan is done: its scheduled activity (the payment's ledger row) puts the update on
        record first, so no confirmation goes out for a payment the server then drops."""
        s = self._state
        if workflow.patched(LOCAL_PATCH):
            await workflow.wait_condition(workflow.all_handlers_finished)
            _LOCAL.set(True)
        reason = str(s.closed_as)
        await self._cancel_tasks(f"loan closed ({reason})")
        await self._recall(f"loan closed ({reason})")
        if s.closed_as in (Stage.paid, Stage.settled) and s.stop is None:
            channel = "sms" if s.loan.borrower.phone else "email"
            template = "paid_confirmation" if s.closed_as is Stage.paid else "settled_confirmation"
            await self._send(str(s.closed_as), template, channel, purpose="transactional")
        self._note("collection_closed", outcome=reason)
        await self._record("closed", "collection_closed")
        await self._sync_search()

    # ---------------------------------------------------------------- handlers

    @workflow.signal
    def roll_over(self) -> None:
        """Continue as new at the next quiet moment. An operator's tool after a deploy: the new
        run takes the current code's patched branches (docs/upgrading.md)."""
        if self._s is not None and self._s.closed_as is None:
            self._roll_over_asked = True

    @workflow.update
    async def pay(self, payment: Payment) -> PaymentReceipt:
        """Apply a payment and answer with the receipt; rejected payments change nothing."""
        return await self._take_payment(payment)

    @pay.validator
    def _check_pay(self, payment: Payment) -> None:
        s = self._s
        check_payment(payment, self._input.loan.currency, s.payment_ids if s else [], s.closed_as if s else None)

    @workflow.signal
    async def payment_received(self, payment: Payment) -> None:
        """The same as `pay` for bank feeds, which cannot take an answer; a rejected payment
        is recorded on the timeline instead."""
        try:
            await self._take_payment(payment)
        except ApplicationError as exc:
            self._note("payment", channel=payment.source, outcome="rejected", detail=exc.message)
            await self._record(f"payment-rejected/{payment.payment_id}/{len(self._state.timeline)}", "payment_rejected")

    @workflow.update
    async def report_task(self, report: TaskReport) -> CollectionStatus:
        """A collector's or field agent's outcome for an open task."""
        task = next((t for t in self._state.open_tasks if t.task_id == report.task_id), None)
        if task is None:  # closed (timed out) between validation and now
            raise ApplicationError(f"task {report.task_id} is no longer open", type="TaskClosed")
        await self._close_task(task, str(report.outcome), report.note, report.reported_by, report.recording_ref)
        return self._status()

    @report_task.validator
    def _check_report(self, report: TaskReport) -> None:
        if self._s is None or all(t.task_id != report.task_id for t in self._s.open_tasks):
            raise ValueError(f"task {report.task_id} is not open on this loan")

    @workflow.update
    async def report_agency(self, report: AgencyReport) -> CollectionStatus:
        """A progress report from the agency that holds the account."""
        self._note(
            "agency_report",
            channel="agency",
            outcome="contacted" if report.contacted else "reported",
            key=report.placement_id,
            detail=report.note,
        )
        await self._record(
            f"agency-report/{len(self._state.timeline)}", "agency_report", report.reported_by, note=report.note
        )
        return self._status()

    @report_agency.validator
    def _check_agency(self, report: AgencyReport) -> None:
        placement = self._s.placement if self._s else None
        if placement is None or placement.placement_id != report.placement_id:
            raise ValueError(f"placement {report.placement_id} is not active on this loan")

    @workflow.update
    async def report_court(self, report: CourtReport) -> CollectionStatus:
        """News of the court case."""
        s = self._state
        if s.case is not None:
            s.case.last_event = report.event
        self._note("court_report", channel="court", outcome=report.event, key=report.case_id, detail=report.note)
        await self._record(
            f"court-report/{len(s.timeline)}", "court_report", report.reported_by, event=report.event, note=report.note
        )
        return self._status()

    @report_court.validator
    def _check_court(self, report: CourtReport) -> None:
        case = self._s.case if self._s else None
        if case is None or case.case_id != report.case_id:
            raise ValueError(f"case {report.case_id} is not open on this loan")

    @workflow.update
    async def opt_out(self, req: OptOutRequest) -> Decision:
        """No more contact on this channel (the guard refuses it from now on)."""
        self._guard(self._check_opt_out, req)
        s = self._state
        s.opted_out.append(req.channel)
        s.deferred = [d for d in s.deferred if d.channel != req.channel]
        self._note("opt_out", channel=req.channel, outcome="recorded", detail=f"by {req.requested_by}")
        await self._record(f"opt-out/{req.channel}", "opt_out", req.requested_by, channel=req.channel)
        return Decision(accepted=True, reason=f"no more {req.channel} contact", ref=req.channel)

    @opt_out.validator
    def _check_opt_out(self, req: OptOutRequest) -> None:
        s = self._ready_state()
        if s.closed_as is not None:
            raise ArrangementRejected("the loan is closed")
        if req.channel in s.opted_out:
            raise ArrangementRejected(f"already opted out of {req.channel}")

    @workflow.update
    async def agency_contact(self, req: AgencyContactRequest) -> GuardDecision:
        """An agency asks before each contact; it shares the person's budget with the lender."""
        s = self._state
        key = f"{req.placement_id}/{req.channel}/{len(s.timeline)}"
        decision = await self._ask_guard(req.channel, "agency", key, "agency_contact")
        if decision is None:  # a run from before the guard: allow, as it did then
            decision = GuardDecision(verdict="allowed", rule="GEN-ALLOWED", at=self._now())
        if decision.verdict == "allowed":
            self._note("agency_contact", channel=req.channel, outcome="allowed", key=key, detail=f"by {req.agent}")
        return decision

    @agency_contact.validator
    def _check_agency_contact(self, req: AgencyContactRequest) -> None:
        placement = self._s.placement if self._s else None
        if placement is None or placement.placement_id != req.placement_id:
            raise ValueError(f"placement {req.placement_id} is not active on this loan")

    @workflow.update
    async def current_status(self) -> CollectionStatus:
        """The status as of now (an update, so the workflow's clock is current)."""
        await workflow.wait_condition(lambda: self._s is not None)
        return self._status()

    @workflow.query
    def status(self) -> CollectionStatus:
        """The status as of the workflow's last activity (cheap; writes no history)."""
        if self._s is None:
            raise ApplicationError("collection is starting; ask again in a moment")
        return self._status()

    # ---------------------------------------------------------------- helpers

    @property
    def _state(self) -> CollectionState:
        assert self._s is not None, "state is set before any handler or step runs"
        return self._s

    def _stage(self) -> Stage:
        s = self._state
        if s.closed_as is not None:
            return s.closed_as
        if s.charged_off_at is not None:
            return Stage.written_off
        return stage_for_dpd(self._dpd(), s.policy)

    def _dpd(self) -> int:
        """Days past due for the ladder: paused days, the ongoing pause included, do not count."""
        s = self._state
        at = s.closed_at or self._now()
        tz = s.loan.borrower.timezone
        ongoing = days_between(s.pause_started_at, at, tz) if s.pause_started_at else 0
        return days_past_due(at, s.loan.due_date, tz, s.paused_days + ongoing)

    def _now(self, policy: Policy | None = None) -> datetime:
        """Business time: the workflow's clock through the policy's clock setting (real time
        unless a test or demo policy compresses it, `models.clock`). Every date the loan
        decides on comes from here; timers sleep the real equivalent (`_sleep_until`).

        Never earlier than the moment the last timer was set for: on a fresh worker taking
        over a task from a dead one (a sticky task that timed out), temporalio 1.35 can hand
        the workflow the previous task's time (tests/sdk_bugs/timer-after-cold-start.json:
        the timer that had just fired was started again with the same duration, and the next
        replay, with the right time, failed as nondeterministic). With the floor both see the
        item as due. A correct history is unchanged: a timer never fires early."""
        now = virtual_now(workflow.now(), (policy or self._state.policy).clock)
        return now if self._floor is None or now >= self._floor else self._floor

    def _today(self) -> date:
        """Today on the borrower's calendar."""
        return local_date(self._now(), self._state.loan.borrower.timezone)

    def _context(self, deadline_days: int | None, **extra: str) -> dict[str, str]:
        return template_context(self._state, self._now(), self._stage(), deadline_days, **extra)

    def _note(self, action: str, *, channel: str = "", outcome: str = "", key: str = "", detail: str = "") -> None:
        self._state.timeline.append(
            TimelineEntry(at=self._now(), action=action, channel=channel, outcome=outcome, key=key, detail=detail)
        )

    async def _activity(self, method: Callable[[_Self, _Arg], _Result], arg: _Arg, *, local: bool = False) -> _Result:
        """Run an activity; as a local activity (same timeout and retries, no server round
        trip) when asked or in the closing steps (`_LOCAL`)."""
        if local or _LOCAL.get():
            return await workflow.execute_local_activity_method(
                method, arg, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY
            )
        return await workflow.execute_activity_method(method, arg, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY)

    async def _try(self, method: Callable[[_Self, _Arg], _Result], arg: _Arg, key: str) -> bool:
        """Run a side effect whose permanent failure (a broken template) must not stop the
        loan's collection: the failure is recorded and escalation goes on."""
        try:
            await self._activity(method, arg)
        except ActivityError as exc:
            cause = exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc)
            self._note("step_failed", outcome="failed", key=key, detail=cause)
            return False
        return True

    async def _record(self, key: str, action: str, actor: str = "workflow", **detail: str) -> None:
        s = self._state
        await self._activity(
            RecordActivities.record_event,
            AuditEvent(
                key=f"{s.loan.loan_id}/{key}",
                loan_id=s.loan.loan_id,
                action=action,
                actor=actor,
                stage=self._stage(),
                at=self._now(),
                detail=detail,
            ),
        )

    def _status(self) -> CollectionStatus:
        s = self._state
        due = self._next_due() if s.closed_as is None else None
        return CollectionStatus(
            loan_id=s.loan.loan_id,
            workflow_id=workflow.info().workflow_id,
            policy=s.policy.name,
            policy_version=s.policy.version,
            currency=s.loan.currency,
            stage=self._stage(),
            days_past_due=self._dpd(),
            as_of=self._now(),
            outstanding=s.balance,
            paid_total=s.paid_total,
            next_action=due.label if due else None,
            next_action_at=due.at if due else None,
            paused_reason=s.paused_reason,
            paused_days=s.paused_days,
            arrangement=arrangement_info(s, self._now()),
            counts=s.counts,
            holds=list(s.holds),
            stop=s.stop,
            charged_off=s.charged_off_at is not None,
            deferred=list(s.deferred),
            opted_out=list(s.opted_out),
            closed=s.closed_as is not None,
            open_tasks=list(s.open_tasks),
            placement=s.placement,
            case=s.case,
            timeline=list(s.timeline),
        )
