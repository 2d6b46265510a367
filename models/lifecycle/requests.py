"""Requests from people and partners: task outcomes, agency and court reports, opt-outs, agency
contact slots, and negotiation (promise to pay, plan, settlement, hardship and its review,
dispute and its resolution, stop). Each has a check, which raises `Rejected` and changes nothing,
and an apply, which the decider runs only after its check passed."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from models.arrangements import (
    ArrangementRejected,
    Decision,
    DisputeRequest,
    DisputeResolution,
    HardshipDecision,
    HardshipReport,
    Hold,
    Instalment,
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
from models.context import template_context
from models.effects import CloseTask, CreateTask
from models.events import AgencyContactRequest, AgencyReport, CourtReport, OptOutRequest, TaskReport
from models.lifecycle.closing import close
from models.lifecycle.contacts import ask, close_task, stop_contact
from models.lifecycle.money import waive, write_off
from models.lifecycle.step import Rejected, Step
from models.loan import Balance, Stage
from models.money import ZERO
from models.negotiation import held_so_far
from models.requests import TaskClosure, TaskKind, TaskRequest
from models.status import ContactKind, DeferredContact

# ------------------------------------------------------------------ reports


def check_task_report(step: Step, report: TaskReport) -> None:
    if all(t.task_id != report.task_id for t in step.s.open_tasks):
        raise Rejected(f"task {report.task_id} is not open on this loan")


def report_task(step: Step, report: TaskReport) -> None:
    task = next(t for t in step.s.open_tasks if t.task_id == report.task_id)
    close_task(step, task, str(report.outcome), report.note, report.reported_by, report.recording_ref)


def check_agency_placement(step: Step, placement_id: str) -> None:
    placement = step.s.placement
    if placement is None or placement.placement_id != placement_id:
        raise Rejected(f"placement {placement_id} is not active on this loan")


def report_agency(step: Step, report: AgencyReport) -> None:
    step.note(
        "agency_report",
        channel="agency",
        outcome="contacted" if report.contacted else "reported",
        key=report.placement_id,
        detail=report.note,
    )
    step.record(f"agency-report/{len(step.s.timeline)}", "agency_report", report.reported_by, note=report.note)


def check_court(step: Step, report: CourtReport) -> None:
    case = step.s.case
    if case is None or case.case_id != report.case_id:
        raise Rejected(f"case {report.case_id} is not open on this loan")


def report_court(step: Step, report: CourtReport) -> None:
    s = step.s
    if s.case is not None:
        s.case.last_event = report.event
    step.note("court_report", channel="court", outcome=report.event, key=report.case_id, detail=report.note)
    step.record(
        f"court-report/{len(s.timeline)}", "court_report", report.reported_by, event=report.event, note=report.note
    )


def check_opt_out(step: Step, req: OptOutRequest) -> None:
    s = step.s
    if s.closed_as is not None:
        raise Rejected("the loan is closed", "ArrangementRejected")
    if req.channel in s.opted_out:
        raise Rejected(f"already opted out of {req.channel}", "ArrangementRejected")


def opt_out(step: Step, req: OptOutRequest) -> Decision:
    """No more contact on this channel (the guard refuses it from now on)."""
    s = step.s
    s.opted_out.append(req.channel)
    s.deferred = [d for d in s.deferred if d.channel != req.channel]
    step.note("opt_out", channel=req.channel, outcome="recorded", detail=f"by {req.requested_by}")
    step.record(f"opt-out/{req.channel}", "opt_out", req.requested_by, channel=req.channel)
    return Decision(accepted=True, reason=f"no more {req.channel} contact", ref=req.channel)


def ask_agency_contact(step: Step, req: AgencyContactRequest, key: str) -> None:
    """An agency asks before it contacts the borrower: the guard decides against the person's
    one budget (the lender's contacts and every agency's); `contacts.answer` keeps its answer."""
    ask(
        step,
        DeferredContact(
            key=key,
            kind=ContactKind.agency,
            purpose="agency",
            channel=req.channel,
            at=step.now,
            what="agency_contact",
            extra={"agent": req.agent},
        ),
    )


# ------------------------------------------------------------------ shared


def _arrangement(step: Step) -> None:
    """Refuse if nothing can be arranged (closed, stopped, disputed)."""
    s = step.s
    try:
        refuse_arrangement(
            closed=s.closed_as is not None, stopped=s.stop is not None, disputed=s.hold("dispute") is not None
        )
    except ArrangementRejected as exc:
        raise _refuse(exc) from exc


def _refuse(exc: ArrangementRejected) -> Rejected:
    return Rejected(str(exc), "ArrangementRejected")


def _new_ref(step: Step, kind: str) -> str:
    s = step.s
    s.arrangement_seq += 1
    return f"{s.loan.loan_id}/{kind}/{s.arrangement_seq}"


def _accepted(
    step: Step, ref: str, kind: str, detail: str, actor: str, outcome: str = "accepted", evidence_ref: str = ""
) -> Decision:
    """Timeline and audit for an accepted request; the pause is re-evaluated by the decider."""
    step.actor = actor
    step.note(kind, outcome=outcome, key=ref, detail=f"{detail} (by {actor})")
    step.record(
        f"{ref.removeprefix(step.loan_id + '/')}/{outcome}",
        f"{kind}_{outcome}",
        actor,
        detail=detail,
        evidence_ref=evidence_ref,
    )
    return Decision(accepted=True, reason=detail, ref=ref)


def _cancel_arrangements(step: Step, why: str) -> None:
    s = step.s
    for arrangement in (s.open_promise(), s.active_plan(), s.open_settlement()):
        if arrangement is not None:
            arrangement.status = "cancelled"
            step.note("arrangement_cancelled", outcome="cancelled", detail=why)


# ------------------------------------------------------------------ promise to pay


def check_promise_request(step: Step, req: PromiseRequest) -> None:
    s = step.s
    _arrangement(step)
    try:
        check_promise(
            req,
            today=step.today(),
            outstanding=s.balance.total,
            currency=s.loan.currency,
            broken=s.counts.promises_broken,
            promise_open=s.open_promise() is not None,
            plan_active=s.active_plan() is not None,
            policy=s.policy,
        )
    except ArrangementRejected as exc:
        raise _refuse(exc) from exc


def promise(step: Step, req: PromiseRequest) -> Decision:
    s = step.s
    ref = _new_ref(step, "promise")
    s.promise = Promise(
        promise_id=ref,
        amount=req.amount,
        due=req.date,
        made_at=step.now,
        paid_at_start=s.paid_total,
        held_at_start=held_so_far(s, step.now),
        made_by=req.made_by,
    )
    return _accepted(step, ref, "promise", f"{req.amount} {s.loan.currency} by {req.date}", req.made_by)


# ------------------------------------------------------------------ instalment plan


def _schedule(step: Step, req: PlanProposal) -> list[Instalment]:
    s = step.s
    active = s.active_plan()
    interest = s.balance.interest if s.policy.plan.waive_interest else ZERO
    try:
        return plan_schedule(
            req,
            total=s.balance.total - interest,
            currency=s.loan.currency,
            today=step.today(),
            policy=s.policy,
            renegotiations=(active.renegotiation + 1) if active else 0,
        )
    except ArrangementRejected as exc:
        raise _refuse(exc) from exc


def check_plan(step: Step, req: PlanProposal) -> None:
    _arrangement(step)
    _schedule(step, req)


def propose_plan(step: Step, req: PlanProposal) -> Decision:
    return _start_plan(step, req, req.made_by)


def _start_plan(step: Step, req: PlanProposal, actor: str) -> Decision:
    """Accept a checked proposal: it replaces a promise or renegotiates the active plan."""
    s = step.s
    schedule = _schedule(step, req)
    renegotiation = 0
    if old := s.active_plan():
        old.status = "renegotiated"
        renegotiation = old.renegotiation + 1
    if open_promise := s.open_promise():
        open_promise.status = "superseded"
    waived = Balance(interest=s.balance.interest) if s.policy.plan.waive_interest else Balance()
    s.balance = s.balance.with_component("interest", s.balance.interest - waived.interest)
    ref = _new_ref(step, "plan")
    s.plan = Plan(
        plan_id=ref,
        total=s.balance.total,
        frequency=req.frequency,
        instalments=schedule,
        made_at=step.now,
        paid_at_start=s.paid_total,
        held_at_start=held_so_far(s, step.now),
        made_by=actor,
        renegotiation=renegotiation,
    )
    if waived.total > 0:
        waive(step, waived, "waiver", f"{ref}/waiver", "interest waived for the plan")
    detail = (
        f"{len(schedule)} payments ({req.frequency}) from {schedule[0].due} to {schedule[-1].due}, "
        f"total {s.balance.total}"
    )
    return _accepted(step, ref, "plan", detail, actor, "renegotiated" if renegotiation else "accepted")


# ------------------------------------------------------------------ settlement


def _discount(step: Step, offer: SettlementOffer) -> Decimal:
    s = step.s
    try:
        return check_settlement(
            offer,
            today=step.today(),
            outstanding=s.balance.total,
            currency=s.loan.currency,
            stage=str(step.stage()),
            settlement_open=s.open_settlement() is not None,
            policy=s.policy,
        )
    except ArrangementRejected as exc:
        raise _refuse(exc) from exc


def check_settlement_offer(step: Step, offer: SettlementOffer) -> None:
    _arrangement(step)
    _discount(step, offer)


def offer_settlement(step: Step, offer: SettlementOffer) -> Decision:
    s = step.s
    discount = _discount(step, offer)
    ref = _new_ref(step, "settlement")
    s.settlement = Settlement(
        offer_id=ref,
        amount=offer.amount,
        deadline=offer.deadline,
        discount=discount,
        made_at=step.now,
        paid_at_start=s.paid_total,
        held_at_start=held_so_far(s, step.now),
        made_by=offer.made_by,
    )
    detail = f"{offer.amount} {s.loan.currency} by {offer.deadline} ({discount:.2%} off {s.balance.total})"
    return _accepted(step, ref, "settlement", detail, offer.made_by, "offered")


# ------------------------------------------------------------------ hardship


def check_hardship(step: Step, report: HardshipReport) -> None:
    s = step.s
    if s.closed_as is not None or s.stop is not None:
        raise Rejected(
            "the loan is closed" if s.closed_as else "collection is stopped for this loan", "ArrangementRejected"
        )
    if s.hold("hardship"):
        raise Rejected("a hardship breathing space is already running", "ArrangementRejected")


def report_hardship(step: Step, report: HardshipReport) -> Decision:
    """A breathing space (no contact, no fees) and a review task for a person."""
    s, now = step.s, step.now
    until = now + timedelta(days=s.policy.hardship.breathing_space_days)
    task_id = _new_ref(step, "hardship-review")
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
    decision = _accepted(
        step,
        task_id,
        "hardship",
        f"{report.reason}; breathing space until {until:%Y-%m-%d}",
        report.reported_by,
        "breathing_space",
        report.evidence_ref,
    )
    stop_contact(step, "hardship reported")
    step.emit(
        CreateTask(
            req=TaskRequest(
                key=task_id,
                loan_id=s.loan.loan_id,
                at=now,
                workflow_id=s.workflow_id,
                kind=TaskKind.hardship_review,
                queue=s.policy.hardship.review_queue,
                template=s.policy.hardship.review_template,
                language=s.loan.borrower.language,
                attempt=1,
                due_by=until,
                context=template_context(
                    s, now, step.stage(), None, reason=report.reason, evidence_ref=report.evidence_ref or "-"
                ),
            )
        )
    )
    return decision


def check_review(step: Step, decision: HardshipDecision) -> None:
    s = step.s
    if s.closed_as is not None or s.hold("hardship") is None:
        raise Rejected("no hardship review is open on this loan", "ArrangementRejected")
    if decision.outcome == "extend_term" and decision.extend_days is None:
        raise Rejected("extend_term needs extend_days", "ArrangementRejected")
    if decision.outcome == "offer_plan":
        if decision.plan is None:
            raise Rejected("offer_plan needs the plan", "ArrangementRejected")
        _arrangement(step)
        _schedule(step, decision.plan)


def review_hardship(step: Step, decision: HardshipDecision) -> Decision:
    """Apply the reviewer's decision (offer a plan, waive, extend, resume, write off)."""
    s = step.s
    hold = s.hold("hardship")
    assert hold is not None
    step.note("hardship_review", outcome=decision.outcome, key=hold.review_task_id, detail=decision.note)
    step.emit(
        CloseTask(
            req=TaskClosure(
                task_id=hold.review_task_id,
                loan_id=s.loan.loan_id,
                at=step.now,
                outcome=decision.outcome,
                note=decision.note,
                closed_by=decision.decided_by,
            )
        )
    )
    if decision.outcome == "extend_term":
        assert decision.extend_days is not None
        hold.until = step.now + timedelta(days=decision.extend_days)
        return _accepted(
            step,
            hold.review_task_id,
            "hardship",
            f"breathing space until {hold.until:%Y-%m-%d}",
            decision.decided_by,
            "extended",
        )
    s.holds.remove(hold)
    if decision.outcome in ("waive_interest", "waive_fees"):
        parts = ("interest",) if decision.outcome == "waive_interest" else ("fees", "penalties")
        waived = Balance(**{p: s.balance.component(p) for p in parts})
        for p in parts:
            s.balance = s.balance.with_component(p, ZERO)
        waive(step, waived, "waiver", f"{hold.review_task_id}/{decision.outcome}", decision.note or decision.outcome)
    elif decision.outcome == "offer_plan":
        assert decision.plan is not None
        return _start_plan(step, decision.plan, decision.decided_by)
    elif decision.outcome == "refer_to_write_off":
        write_off(step)
    return _accepted(step, hold.review_task_id, "hardship", decision.outcome, decision.decided_by, "ended")


# ------------------------------------------------------------------ dispute


def check_dispute(step: Step, req: DisputeRequest) -> None:
    s = step.s
    if s.closed_as is not None:
        raise Rejected("the loan is closed", "ArrangementRejected")
    if s.hold("dispute"):
        raise Rejected("a dispute is already open", "ArrangementRejected")


def raise_dispute(step: Step, req: DisputeRequest) -> Decision:
    s, now = step.s, step.now
    s.holds.append(Hold(kind="dispute", reason=req.reason, started_at=now, by=req.raised_by))
    ref = _new_ref(step, "dispute")
    decision = _accepted(step, ref, "dispute", req.reason, req.raised_by, "open")
    stop_contact(step, "dispute raised")
    if s.case is not None:
        s.case.last_event = "on hold (dispute)"
        step.note("court_hold", channel="court", outcome="on hold", key=s.case.case_id, detail="dispute raised")
        step.record(f"{ref.removeprefix(step.loan_id + '/')}/court-hold", "court_hold", req.raised_by)
    return decision


def check_resolution(step: Step, res: DisputeResolution) -> None:
    s = step.s
    if s.closed_as is not None or s.hold("dispute") is None:
        raise Rejected("no dispute is open on this loan", "ArrangementRejected")


def resolve_dispute(step: Step, res: DisputeResolution) -> Decision:
    """Upheld: the balance is cancelled and the loan closes; rejected: collection resumes."""
    s = step.s
    hold = s.hold("dispute")
    assert hold is not None
    s.holds.remove(hold)
    ref = _new_ref(step, "dispute-resolution")
    if res.upheld:
        cancelled, s.balance = s.balance, Balance()
        _cancel_arrangements(step, "dispute upheld")
        decision = _accepted(step, ref, "dispute", res.note or "upheld", res.resolved_by, "upheld")
        waive(step, cancelled, "cancellation", f"{ref}/cancellation", "dispute upheld")
        close(step, Stage.dispute_upheld)
        return decision
    if s.case is not None:
        s.case.last_event = "resumed"
    return _accepted(step, ref, "dispute", res.note or "rejected", res.resolved_by, "rejected")


# ------------------------------------------------------------------ stop


def check_stop(step: Step, req: StopRequest) -> None:
    s = step.s
    if s.closed_as is not None:
        raise Rejected("the loan is closed", "ArrangementRejected")
    if s.stop is not None and not (s.stop.route == "legal_review" and req.route == "write_off"):
        raise Rejected(
            "collection is already stopped; only a legal review can still refer it to write-off", "ArrangementRejected"
        )
    if s.charged_off_at is not None and (req.route or getattr(s.policy.stop, req.reason)) == "write_off":
        raise Rejected("the loan is already written off", "ArrangementRejected")


def stop_collection(step: Step, req: StopRequest) -> Decision:
    """Bankruptcy, death or cease-contact: no more contact on any channel, the agency is
    recalled, and the loan goes to legal review or is written off."""
    s, now = step.s, step.now
    route = req.route or getattr(s.policy.stop, req.reason)
    first = s.stop is None
    s.stop = StopInfo(
        reason=req.reason,
        route=route,
        at=now,
        by=req.requested_by,
        evidence_ref=req.evidence_ref,
        legal_task_id=s.stop.legal_task_id if s.stop else "",
    )
    _cancel_arrangements(step, f"collection stopped ({req.reason})")
    ref = _new_ref(step, "stop")
    decision = _accepted(step, ref, "stop", f"{req.reason}; route {route}", req.requested_by, route, req.evidence_ref)
    stop_contact(step, f"collection stopped ({req.reason})")
    if route == "write_off":
        write_off(step)
    elif first:
        s.stop.legal_task_id = f"{ref}/legal-review"
        step.emit(
            CreateTask(
                req=TaskRequest(
                    key=s.stop.legal_task_id,
                    loan_id=s.loan.loan_id,
                    at=now,
                    workflow_id=s.workflow_id,
                    kind=TaskKind.legal_review,
                    queue=s.policy.stop.legal_queue,
                    template=s.policy.stop.legal_template,
                    language=s.loan.borrower.language,
                    attempt=1,
                    due_by=now + timedelta(days=30),
                    context=template_context(
                        s, now, step.stage(), None, reason=req.reason, evidence_ref=req.evidence_ref or "-"
                    ),
                )
            )
        )
    return decision
