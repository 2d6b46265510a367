"""Contacts and people's work: messages and tasks through the conduct guard, deferred contacts,
task outcomes and retries, agency placement and recall, the court case.

A contact is two decisions: the guard is asked (`AskGuard`, the contact waits in
`state.asking`), and its answer (`answer`) sends it, defers it or records the refusal. A contact
whose reason went away while the guard decided (the loan closed, escalation paused, the channel
opted out) is not made.
"""

from __future__ import annotations

from datetime import timedelta

from models.conduct import ContactRequest, GuardDecision, Situation
from models.context import template_context
from models.effects import AskGuard, CloseTask, CreateTask, FileCase, Place, Recall, RecordConversation, SendMessage
from models.lifecycle.step import Step
from models.negotiation import pause_reason
from models.policy import Action, LadderStep
from models.requests import (
    CaseRequest,
    GuardRequest,
    MessageRequest,
    PlacementRequest,
    RecallRequest,
    TaskClosure,
    TaskKind,
    TaskRequest,
)
from models.schedule import at_local, local_date, next_contact_moment
from models.status import CaseInfo, CollectionState, ContactKind, DeferredContact, OpenTask, PlacementInfo

_CHANNEL_FIELD = {"sms": "phone", "email": "email", "letter": "address"}
REACHED = ("answered", "promised", "refused")
"""Task outcomes in which the borrower was reached: no retry, and a conversation for the caps."""


# ------------------------------------------------------------------ asking the guard


def situation(s: CollectionState) -> Situation:
    return Situation(
        stopped=s.stop is not None, held=bool(s.holds), paused=s.paused_reason is not None, opted_out=list(s.opted_out)
    )


def guard_request(step: Step, channel: str, purpose: str, key: str) -> GuardRequest:
    s = step.s
    assert s.rules is not None, "the conduct rules are pinned when collection starts"
    contact = ContactRequest(
        borrower_id=s.loan.borrower.borrower_id,
        loan_id=s.loan.loan_id,
        channel=channel,
        purpose=purpose,
        at=step.now,
        timezone=s.loan.borrower.timezone,
        key=key,
    )
    return GuardRequest(contact=contact, rules=s.rules, situation=situation(s), clock=s.policy.clock)


def ask(step: Step, pending: DeferredContact) -> None:
    """Ask the guard for `pending` (its `at` set to now); `answer` takes it from there."""
    step.s.asking.append(pending.model_copy(update={"at": step.now}))
    step.emit(AskGuard(req=guard_request(step, pending.channel, pending.purpose, pending.key)))


def overtaken(s: CollectionState, purpose: str, channel: str) -> str | None:
    """Why a contact lost its reason while the guard decided, if it did: the loan closed
    (anything but a transactional message), escalation paused or the loan was written off
    (an escalation contact), or the borrower opted out of the channel."""
    if purpose == "transactional":
        return None
    if s.closed_as is not None:
        return f"loan {s.closed_as}"
    if purpose == "agency" and (s.stop is not None or s.holds):
        return "collection stopped" if s.stop is not None else "on hold"
    if purpose == "escalation" and pause_reason(s) is not None:
        return f"paused: {pause_reason(s)}"
    if purpose == "escalation" and s.charged_off_at is not None:
        return "written off"
    if channel in s.opted_out:
        return f"opted out of {channel}"
    return None


def answer(step: Step, key: str, decision: GuardDecision) -> None:
    """The guard answered the contact `key`: make it, defer it, or record why not."""
    s = step.s
    pending = next((p for p in s.asking if p.key == key), None)
    if pending is None:  # answered already (cannot happen: one question per key at a time)
        return
    s.asking.remove(pending)
    why = overtaken(s, pending.purpose, pending.channel) if decision.verdict != "refused" else None
    if why is not None:
        decision = GuardDecision(
            verdict="refused",
            rule="GEN-OVERTAKEN",
            at=step.now,
            reason=f"{why} while the guard decided",
            decided_at=decision.decided_at,
        )
    if pending.kind == ContactKind.agency:
        _agency_answered(step, pending, decision)
        return
    what = _subject(pending)
    if decision.verdict != "allowed":
        until = f" until {decision.at:%Y-%m-%d %H:%M}" if decision.verdict == "deferred" else ""
        step.note(
            what,
            channel=pending.channel,
            outcome=decision.verdict,
            key=key,
            detail=f"{decision.rule}{until}: {decision.reason}",
        )
        if decision.verdict == "deferred":
            s.deferred.append(pending.model_copy(update={"at": decision.at}))
        return
    _make_now(step, pending)


def _subject(pending: DeferredContact) -> str:
    """What the timeline calls a message or task contact: the template, or the task's name."""
    match pending.kind:
        case ContactKind.message:
            return pending.template
        case ContactKind.task:
            return pending.what
        case _:
            raise ValueError(f"no subject for a contact of kind {pending.kind!r}")


def _make_now(step: Step, pending: DeferredContact) -> None:
    """The guard allowed a message or task contact: send it, or create the task."""
    match pending.kind:
        case ContactKind.message:
            _send_now(step, pending)
        case ContactKind.task:
            _create_task_now(step, pending)
        case _:
            raise ValueError(f"cannot make a contact of kind {pending.kind!r}")


AGENCY_ANSWERS_KEPT = 50


def _agency_answered(step: Step, pending: DeferredContact, decision: GuardDecision) -> None:
    """Keep the answer for the agency to read (the latest ones only) and put it on the timeline;
    a deferred agency contact is the agency's to ask again, not the loan's."""
    answers = step.s.agency_answers
    answers[pending.key] = decision
    for old in list(answers)[:-AGENCY_ANSWERS_KEPT]:
        del answers[old]
    if decision.verdict == "allowed":
        detail = f"by {pending.extra.get('agent', 'agency')}"
    else:
        until = f" until {decision.at:%Y-%m-%d %H:%M}" if decision.verdict == "deferred" else ""
        detail = f"{decision.rule}{until}: {decision.reason}"
    step.note("agency_contact", channel=pending.channel, outcome=decision.verdict, key=pending.key, detail=detail)


def run_deferred(step: Step, key: str) -> None:
    """A deferred contact's moment came: ask the guard again."""
    s = step.s
    d = next(x for x in s.deferred if x.key == key)
    s.deferred.remove(d)
    ask(step, d)


# ------------------------------------------------------------------ messages


def send(
    step: Step,
    what: str,
    template: str,
    channel: str,
    deadline_days: int | None = None,
    extra: dict[str, str] | None = None,
    purpose: str = "escalation",
) -> None:
    """Send one message once the guard allows it; `what` (the step key) makes the idempotency
    key. A transactional message asks the guard inside the sending activity (only a stop can
    refuse it, and nothing can overtake it)."""
    s = step.s
    key = f"{s.loan.loan_id}/{what}/{channel}"
    if not recipient(s, channel, purpose):
        step.note(template, channel=channel, outcome="skipped", key=key, detail=f"no {channel} address")
        return
    pending = DeferredContact(
        key=key,
        kind=ContactKind.message,
        purpose=purpose,
        channel=channel,
        at=step.now,
        what=what,
        template=template,
        deadline_days=deadline_days,
        extra=extra or {},
    )
    if purpose == "transactional":
        step.emit(SendMessage(req=_message(step, pending), guard=guard_request(step, channel, purpose, key)))
        return
    ask(step, pending)


def _send_now(step: Step, pending: DeferredContact) -> None:
    step.emit(SendMessage(req=_message(step, pending)))


def _message(step: Step, p: DeferredContact) -> MessageRequest:
    s = step.s
    return MessageRequest(
        key=p.key,
        loan_id=s.loan.loan_id,
        at=step.now,
        channel=p.channel,
        template=p.template,
        language=s.loan.borrower.language,
        recipient=recipient(s, p.channel, p.purpose),
        context=template_context(s, step.now, step.stage(), p.deadline_days, **p.extra),
    )


def recipient(s: CollectionState, channel: str, purpose: str) -> str:
    """The borrower's address for the channel; for `locate`, the first third party's phone."""
    borrower = s.loan.borrower
    if purpose == "locate":
        return borrower.third_parties[0].phone if borrower.third_parties else ""
    return str(getattr(borrower, _CHANNEL_FIELD[channel]))


def message_done(step: Step, cmd: SendMessage, ok: bool, error: str, guard: GuardDecision | None) -> None:
    """Record what became of a message (and, for a transactional one, the guard's refusal)."""
    req = cmd.req
    if guard is not None and guard.verdict != "allowed":
        step.note(
            req.template,
            channel=req.channel,
            outcome=guard.verdict,
            key=req.key,
            detail=f"{guard.rule}: {guard.reason}",
        )
        return
    if not ok:
        step.note("step_failed", outcome="failed", key=req.key, detail=error)
    step.note(req.template, channel=req.channel, outcome="sent" if ok else "failed", key=req.key)


# ------------------------------------------------------------------ tasks


def create_task(step: Step, ladder_step: LadderStep, attempt: int) -> None:
    key = f"{step.loan_id}/{ladder_step.key}/{attempt}"
    channel = TaskKind.of(ladder_step.action).channel
    ask(
        step,
        DeferredContact(
            key=key,
            kind=ContactKind.task,
            purpose="escalation",
            channel=channel,
            at=step.now,
            what=f"{ladder_step.action}_task",
            step_key=ladder_step.key,
            attempt=attempt,
        ),
    )


def _ladder_step(step: Step, step_key: str) -> LadderStep:
    found = next(a.step for a in step.plan if a.key == f"step:{step_key}")
    assert found is not None
    return found


def _create_task_now(step: Step, pending: DeferredContact) -> None:
    """The guard allowed the call or visit: the task is open from now (a failure to create it
    takes it back, `task_done`), so a close or a stop that comes before the result cancels it."""
    s, ls = step.s, _ladder_step(step, pending.step_key)
    deadline = step.now + timedelta(hours=ls.outcome_timeout_hours)
    step.emit(
        CreateTask(
            req=TaskRequest(
                key=pending.key,
                loan_id=s.loan.loan_id,
                at=step.now,
                workflow_id=s.workflow_id,
                kind=TaskKind.of(ls.action),
                queue=ls.queue,
                template=ls.template,
                language=s.loan.borrower.language,
                attempt=pending.attempt,
                due_by=deadline,
                context=template_context(s, step.now, step.stage(), ls.deadline_days, attempt=str(pending.attempt)),
            )
        )
    )
    s.open_tasks.append(
        OpenTask(
            task_id=pending.key,
            kind=TaskKind.of(ls.action),
            step_key=ls.key,
            attempt=pending.attempt,
            queue=ls.queue,
            deadline=deadline,
        )
    )


def task_done(step: Step, cmd: CreateTask, ok: bool, error: str) -> None:
    """Record a call or visit task as created (or failed: then it is not open after all);
    hardship and legal reviews are on the timeline with the request that asked for them."""
    req = cmd.req
    if not ok:
        step.s.open_tasks = [t for t in step.s.open_tasks if t.task_id != req.key]
        step.note("step_failed", outcome="failed", key=req.key, detail=error)
    if req.kind in (TaskKind.call, TaskKind.field_visit):
        step.note(
            f"{req.kind}_task",
            channel=req.kind.channel,
            outcome="created" if ok else "failed",
            key=req.key,
            detail=f"attempt {req.attempt}, queue {req.queue}",
        )


def close_task(step: Step, task: OpenTask, outcome: str, note: str, by: str, recording: str = "") -> None:
    """Close a task and, if the borrower was not reached, plan the next attempt."""
    s = step.s
    s.open_tasks.remove(task)
    ls = next((a.step for a in step.plan if a.key == f"step:{task.step_key}"), None)
    reached = outcome in REACHED
    if (
        ls is not None
        and not reached
        and outcome != "wrong_number"
        and task.attempt < ls.attempts
        and s.closed_as is None
        and s.charged_off_at is None
    ):
        at = next_contact_moment(step.now + timedelta(hours=ls.retry_after_hours), s.policy, step.tz)
        s.retries.append(task.model_copy(update={"attempt": task.attempt + 1, "deadline": at}))
    step.note(
        f"{task.kind}_outcome",
        channel=task.kind.channel,
        outcome=outcome,
        key=task.task_id,
        detail=note,
    )
    step.emit(
        CloseTask(
            req=TaskClosure(
                task_id=task.task_id,
                loan_id=s.loan.loan_id,
                at=step.now,
                outcome=outcome,
                note=note,
                recording_ref=recording,
                closed_by=by,
            )
        )
    )
    if reached and s.rules is not None:  # a conversation: the caps and quiet periods count it
        step.emit(RecordConversation(task_id=task.task_id))
    located = any(e.action == "locate_request" for e in s.timeline)
    if outcome == "wrong_number" and s.loan.borrower.third_parties and s.rules is not None and not located:
        # the borrower cannot be reached: ask a third party, once, to pass on a call-back
        # request; the template names neither the debt nor the lender
        send(step, "locate", "locate_request", "sms", purpose="locate")


def cancel_tasks(step: Step, reason: str) -> None:
    """No more calls or visits: open tasks closed, planned retries and deferred contacts dropped."""
    s = step.s
    s.retries.clear()
    s.deferred.clear()
    for task in list(s.open_tasks):
        close_task(step, task, "cancelled", reason, "workflow")


def timed_out(step: Step, task_id: str) -> None:
    task = next(t for t in step.s.open_tasks if t.task_id == task_id)
    close_task(step, task, "timeout", "no outcome reported in time", "workflow")


def retry(step: Step, task_id: str) -> None:
    s = step.s
    r = next(x for x in s.retries if x.task_id == task_id)
    s.retries.remove(r)
    run_step(step, _ladder_step(step, r.step_key), attempt=r.attempt)


# ------------------------------------------------------------------ ladder steps


def run_step(step: Step, ls: LadderStep, attempt: int) -> None:
    if ls.action is Action.message:
        for channel in ls.channels:
            send(step, ls.key, ls.template, channel, ls.deadline_days)
    elif ls.action in (Action.call, Action.field_visit):
        create_task(step, ls, attempt)
    elif ls.action is Action.agency:
        place(step, ls)
    elif ls.action is Action.litigation:
        file_case(step, ls)
    else:  # pragma: no cover - the policy schema admits no other action
        raise AssertionError(f"unknown ladder action {ls.action}")


def place(step: Step, ls: LadderStep) -> None:
    """Hand the account to the agency; the recall falls at send time on the last day, so it
    comes before that day's steps."""
    s, now = step.s, step.now
    key = f"{s.loan.loan_id}/{ls.key}"
    recall_at = at_local(
        local_date(now, step.tz) + timedelta(days=s.policy.agency.period_days), s.policy.contact.send_at, step.tz
    )
    agency = s.policy.agency.name
    step.emit(
        Place(
            req=PlacementRequest(
                key=key,
                loan_id=s.loan.loan_id,
                at=now,
                agency=agency,
                recall_at=recall_at,
                balance=s.balance,
                currency=s.loan.currency,
                template=ls.template,
                language=s.loan.borrower.language,
                context=template_context(
                    s, now, step.stage(), None, agency=agency, recall_date=recall_at.date().isoformat()
                ),
            )
        )
    )
    s.placement = PlacementInfo(placement_id=key, agency=agency, placed_at=now, recall_at=recall_at)


def placed(step: Step, cmd: Place, ok: bool, error: str) -> None:
    req = cmd.req
    if not ok:
        if step.s.placement is not None and step.s.placement.placement_id == req.key:
            step.s.placement = None
        step.note("step_failed", outcome="failed", key=req.key, detail=error)
    step.note(
        "agency_placement",
        channel="agency",
        outcome="placed" if ok else "failed",
        key=req.key,
        detail=f"{req.agency} until {req.recall_at:%Y-%m-%d}",
    )


def recall(step: Step, reason: str) -> None:
    s = step.s
    placement = s.placement
    if placement is None:
        return
    s.placement = None
    step.emit(
        Recall(
            req=RecallRequest(placement_id=placement.placement_id, loan_id=s.loan.loan_id, at=step.now, reason=reason)
        )
    )
    step.note("agency_recall", channel="agency", outcome="recalled", key=placement.placement_id, detail=reason)


def file_case(step: Step, ls: LadderStep) -> None:
    s = step.s
    key = f"{s.loan.loan_id}/{ls.key}"
    step.emit(
        FileCase(
            req=CaseRequest(
                key=key,
                loan_id=s.loan.loan_id,
                at=step.now,
                balance=s.balance,
                currency=s.loan.currency,
                template=ls.template,
                language=s.loan.borrower.language,
                context=template_context(s, step.now, step.stage()),
            )
        )
    )
    s.case = CaseInfo(case_id=key, filed_at=step.now)


def case_filed(step: Step, cmd: FileCase, ok: bool, error: str) -> None:
    key = cmd.req.key
    if not ok:
        if step.s.case is not None and step.s.case.case_id == key:
            step.s.case = None
        step.note("step_failed", outcome="failed", key=key, detail=error)
    step.note("litigation", channel="court", outcome="filed" if ok else "failed", key=key)


def stop_contact(step: Step, why: str) -> None:
    """Holds and stops: recall the agency and cancel open tasks and planned retries now."""
    recall(step, why)
    cancel_tasks(step, why)
