"""The decider without Temporal: every event type, every command it answers with, and a whole
ladder driven by a few lines of Python, on the production policy and rule set.

`Loan` below is the smallest possible shell: it runs each command at once (the guard with the
real pure rules over an in-memory contact history, every effect succeeding unless told
otherwise) and feeds the results back, as the workflow does through activities.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from infra.loaders import load_holidays, load_policy, load_ruleset
from models import lifecycle
from models.arrangements import (
    DisputeRequest,
    DisputeResolution,
    HardshipDecision,
    HardshipReport,
    PlanProposal,
    PromiseRequest,
    SettlementOffer,
    StopRequest,
)
from models.conduct import GuardDecision, PastContact, decide
from models.effects import (
    AskGuard,
    Audit,
    ChargeOff,
    CloseTask,
    Command,
    CreateTask,
    EffectResult,
    Place,
    PostFee,
    Recall,
    RecordConversation,
    RecordPayment,
    SendMessage,
    Waive,
)
from models.events import AgencyContactRequest, AgencyReport, CourtReport, OptOutRequest, TaskOutcome, TaskReport
from models.loan import Borrower, OverdueLoan, Stage, ThirdParty
from models.payment import Payment, PaymentReceipt
from models.policy import Policy
from models.requests import ConductRules
from models.schedule import at_local, days_past_due
from models.status import CollectionState
from tests.helpers import EXPECTED_TIMELINE, ROOT

TZ = "Asia/Shanghai"
DUE = date(2026, 3, 2)
POLICY = load_policy("default", ROOT / "policies")
_RULESET = load_ruleset(POLICY.conduct.ruleset, ROOT / "rulesets", POLICY.conduct.overrides)
RULES = ConductRules(ruleset=_RULESET, holidays=sorted(load_holidays(_RULESET.hours.holidays, ROOT / "rulesets")))


def at(dpd: int, clock: time = time(12, 0)) -> datetime:
    """`clock` local time on day `dpd` past due."""
    return at_local(DUE + timedelta(days=dpd), clock, TZ)


def make_loan(third_party: bool = False, principal: str = "10000.00") -> OverdueLoan:
    borrower = Borrower(
        borrower_id="B-1",
        name="李明",
        phone="+8613800000000",
        email="b@example.cn",
        address="上海市",
        timezone=TZ,
        third_parties=[ThirdParty(phone="+8613900000000")] if third_party else [],
    )
    return OverdueLoan(
        loan_id="L-1",
        borrower=borrower,
        currency="CNY",
        principal=Decimal(principal),
        interest=Decimal("500.00"),
        fees=Decimal("100.00"),
        due_date=DUE,
    )


class Loan:
    """A loan driven by the decider alone: commands run at once, results fed back in order."""

    def __init__(self, start: datetime, loan: OverdueLoan | None = None, policy: Policy = POLICY) -> None:
        self.loan = loan or make_loan()
        outcome = lifecycle.begin(self.loan, policy, RULES, start, workflow_id="collection-L-1")
        self.s: CollectionState = outcome.state
        self.history: list[PastContact] = []  # the person's contacts, for the guard
        self.ran: list[Command] = []  # every command, in order
        self.fail: Callable[[Command], str] = lambda _cmd: ""  # an effect's permanent error, if any
        self.guard: Callable[[AskGuard], GuardDecision | None] = lambda _ask: None  # an override
        self.run(outcome.commands)

    @property
    def now(self) -> datetime:
        return lifecycle.clock_of(self.s)

    def run(self, commands: list[Command]) -> None:
        queue = list(commands)
        while queue:
            cmd = queue.pop(0)
            self.ran.append(cmd)
            if isinstance(cmd, AskGuard):
                decision = self.guard(cmd) or self._decide(cmd)
                event: lifecycle.Event = lifecycle.GuardAnswered(key=cmd.key, decision=decision)
                queue += lifecycle.decide(self.s, event, decision.decided_at or self.now).commands
                continue
            error = self.fail(cmd)
            result = EffectResult(key=cmd.key, ok=not error, error=error)
            if isinstance(cmd, SendMessage) and cmd.guard is not None:
                guard = self._decide(AskGuard(req=cmd.guard))
                result = result.model_copy(update={"guard": guard, "ok": result.ok and guard.verdict == "allowed"})
            queue += lifecycle.decide(self.s, lifecycle.EffectDone(effect=cmd, result=result), self.now).commands

    def _decide(self, ask: AskGuard) -> GuardDecision:
        c = ask.req.contact
        decision = decide(c, self.history, ask.req.rules.ruleset, ask.req.situation, frozenset(ask.req.rules.holidays))
        if decision.verdict == "allowed":
            self.history.append(PastContact(channel=c.channel, at=c.at))
        return decision.model_copy(update={"decided_at": c.at})

    def until(self, moment: datetime) -> None:
        """Feed time in, wake after wake, up to `moment` (as the workflow's timers would)."""
        while (wake := lifecycle.next_wake(self.s)) is not None and wake <= moment:
            self.run(lifecycle.decide(self.s, lifecycle.TimeReached(at=wake), wake).commands)

    def tell(self, event: lifecycle.Event, when: datetime | None = None) -> Any:  # the decider's reply is Any
        """A request at `when` (default: the loan's clock): checked, applied, its commands run."""
        outcome = lifecycle.decide(self.s, event, when or self.now)
        self.run(outcome.commands)
        return outcome.reply

    def pay(self, amount: str, pid: str = "P-1", when: datetime | None = None) -> Any:
        return self.tell(
            lifecycle.PaymentReceived(
                payment=Payment(payment_id=pid, amount=Decimal(amount), currency="CNY", paid_at=when or self.now)
            ),
            when,
        )

    def rows(self) -> list[tuple[int, str, str, str]]:
        return [(days_past_due(e.at, DUE, TZ), e.action, e.channel, e.outcome) for e in self.s.timeline]

    def kinds(self, since: int = 0) -> list[str]:
        return [c.kind for c in self.ran[since:]]

    def audits(self) -> list[str]:
        return [c.req.action for c in self.ran if isinstance(c, Audit)]


def actions(loan: Loan) -> list[tuple[str, str]]:
    return [(e.action, e.outcome) for e in loan.s.timeline]


# ------------------------------------------------------------------ start, time, the ladder


def test_a_whole_ladder_is_the_workflows_ladder() -> None:
    """The decider alone walks the default ladder exactly as the workflow does on Temporal."""
    loan = Loan(at(0, time(9, 0)))
    loan.until(at(600))
    assert loan.rows() == EXPECTED_TIMELINE
    assert loan.s.closed_as is Stage.written_off and lifecycle.next_wake(loan.s) is None
    assert loan.kinds().count("post_fee") == 5 and loan.kinds().count("charge_off") == 1


def test_a_loan_at_dpd_0_asks_for_nothing_and_sleeps_until_the_first_reminder() -> None:
    outcome = lifecycle.begin(make_loan(), POLICY, RULES, at(0), workflow_id="w")
    assert outcome.commands == [] and [e.action for e in outcome.state.timeline] == ["collection_started"]
    assert lifecycle.next_wake(outcome.state) == at(1, time(10, 0))
    assert lifecycle.stage(outcome.state, at(0)) is Stage.early


def test_a_message_asks_the_guard_then_sends_and_records() -> None:
    loan = Loan(at(0))
    outcome = lifecycle.decide(loan.s, lifecycle.TimeReached(at=at(1, time(10, 0))), at(1, time(10, 0)))
    [ask] = outcome.commands
    assert isinstance(ask, AskGuard) and ask.req.contact.channel == "sms" and ask.req.clock == POLICY.clock
    assert [p.key for p in loan.s.asking] == ["L-1/message@1/sms"]
    answer = GuardDecision(verdict="allowed", rule="GEN-ALLOWED", at=at(1, time(10, 0)), decided_at=at(1, time(10, 1)))
    answered = lifecycle.GuardAnswered(key=ask.key, decision=answer)
    [send] = lifecycle.decide(loan.s, answered, at(1, time(10, 1))).commands
    assert isinstance(send, SendMessage) and send.req.template == "reminder_first" and send.guard is None
    assert loan.s.asking == [] and lifecycle.clock_of(loan.s) == at(1, time(10, 1))
    lifecycle.decide(loan.s, lifecycle.EffectDone(effect=send, result=EffectResult(key=send.key)), at(1, time(10, 2)))
    assert actions(loan)[-1] == ("reminder_first", "sent")


def test_a_late_hand_over_in_the_evening_runs_only_the_latest_step_due() -> None:
    """Reported defect: handed over at DPD 3 in the evening, the loan sent both the DPD 1 and
    the DPD 3 reminders the next morning. The DPD 3 reminder was due (10:00) by the evening, so
    it is the one step behind that runs; the DPD 1 one is not replayed."""
    loan = Loan(at(3, time(22, 0)))  # after the contact window closed (21:00)
    assert loan.s.catch_up_key == "step:message@3"
    loan.until(at(4, time(12, 0)))
    sent = [(d, a) for d, a, _c, o in loan.rows() if o == "sent"]
    assert sent == [(4, "reminder_second"), (4, "reminder_second")]  # sms and e-mail, 08:00 next morning
    assert all(c.req.template != "reminder_first" for c in loan.ran if isinstance(c, SendMessage))


def test_a_hand_over_before_the_days_step_runs_the_earlier_step_and_keeps_the_days() -> None:
    loan = Loan(at(3, time(9, 0)))  # the DPD 3 reminder is at 10:00: still ahead
    assert loan.s.catch_up_key == "step:message@1"
    loan.until(at(3, time(12, 0)))
    assert [a for _d, a, _c, o in loan.rows() if o == "sent"] == [
        "reminder_first",
        "reminder_second",
        "reminder_second",
    ]


def test_a_loan_past_its_write_off_day_is_written_off_at_once() -> None:
    loan = Loan(at(200))
    loan.until(at(200))
    assert loan.s.charged_off_at == at(200) and "charge_off" in loan.kinds()
    assert lifecycle.stage(loan.s, at(200)) is Stage.written_off


def test_a_deferred_contact_is_asked_again_at_its_moment() -> None:
    loan = Loan(at(0))
    later = at(1, time(15, 0))
    loan.guard = lambda ask: (
        GuardDecision(verdict="deferred", rule="CN-CAP", at=later, reason="cap") if ask.req.contact.at < later else None
    )
    loan.until(at(1, time(12, 0)))
    assert actions(loan)[-1] == ("reminder_first", "deferred") and loan.s.deferred[0].at == later
    assert lifecycle.next_wake(loan.s) == later
    loan.until(later)
    assert actions(loan)[-1] == ("reminder_first", "sent") and loan.s.deferred == []


def test_a_refused_contact_is_recorded_and_not_made() -> None:
    loan = Loan(at(0))
    loan.guard = lambda ask: GuardDecision(verdict="refused", rule="CN-HOURS", at=ask.req.contact.at, reason="no")
    loan.until(at(1, time(12, 0)))
    assert actions(loan)[-1] == ("reminder_first", "refused") and "send_message" not in loan.kinds()


def test_a_contact_overtaken_while_the_guard_decided_is_not_made() -> None:
    loan = Loan(at(0))
    [ask] = lifecycle.decide(loan.s, lifecycle.TimeReached(at=at(1, time(10, 0))), at(1, time(10, 0))).commands
    loan.pay("10600.00", when=at(1, time(10, 0)))  # paid in full while the guard decides
    allowed = GuardDecision(verdict="allowed", rule="GEN-ALLOWED", at=at(1, time(10, 0)))
    answered = lifecycle.GuardAnswered(key=ask.key, decision=allowed)
    assert lifecycle.decide(loan.s, answered, at(1, time(10, 1))).commands == []
    assert ("reminder_first", "refused") in actions(loan)
    assert "GEN-OVERTAKEN" in next(e.detail for e in loan.s.timeline if e.outcome == "refused")


def test_an_effect_that_fails_for_good_is_recorded_and_collection_goes_on() -> None:
    loan = Loan(at(0))
    loan.fail = lambda cmd: "template reminder_first.sms.j2: boom" if isinstance(cmd, SendMessage) else ""
    loan.until(at(1, time(12, 0)))
    assert actions(loan)[-2:] == [("step_failed", "failed"), ("reminder_first", "failed")]
    assert lifecycle.next_wake(loan.s) == at(3, time(10, 0))


def test_a_task_that_cannot_be_created_is_not_open() -> None:
    loan = Loan(at(0))
    loan.fail = lambda cmd: "no template" if isinstance(cmd, CreateTask) else ""
    loan.until(at(5, time(12, 0)))
    assert loan.s.open_tasks == [] and ("call_task", "failed") in actions(loan)


# ------------------------------------------------------------------ payments


def test_a_partial_payment_is_allocated_in_policy_order_and_escalation_goes_on() -> None:
    loan = Loan(at(0))
    loan.until(at(8))  # the DPD 7 fee (525.00) is posted
    since = len(loan.ran)
    receipt = loan.pay("700.00", when=at(8))
    a = receipt.allocation
    assert (a.penalties, a.fees, a.interest) == (Decimal("525.00"), Decimal("100.00"), Decimal("75.00"))
    assert receipt.outstanding.total == Decimal("10425.00") and not receipt.closed
    assert loan.kinds(since) == ["record_payment"] and lifecycle.next_wake(loan.s) is not None


def test_a_payment_in_full_closes_everything_in_the_same_decision() -> None:
    loan = Loan(at(55))
    loan.until(at(61))  # placed with the agency at DPD 60
    assert loan.s.placement is not None
    outcome = lifecycle.decide(
        loan.s,
        lifecycle.PaymentReceived(
            payment=Payment(payment_id="P-9", amount=loan.s.balance.total, currency="CNY", paid_at=at(61))
        ),
        at(61),
    )
    assert isinstance(outcome.reply, PaymentReceipt)
    assert outcome.reply.closed and loan.s.closed_as is Stage.paid
    kinds = [c.kind for c in outcome.commands]
    assert kinds[0] == "record_payment" and "recall" in kinds and kinds[-1] == "audit"
    confirmation = next(c for c in outcome.commands if isinstance(c, SendMessage))
    assert confirmation.req.template == "paid_confirmation" and confirmation.guard is not None
    assert lifecycle.next_wake(loan.s) is None
    loan.run(outcome.commands)
    assert actions(loan)[-2:] == [("paid_confirmation", "sent"), ("collection_closed", "paid")]


@pytest.mark.parametrize(
    ("amount", "currency", "reason"),
    [
        ("0", "CNY", "positive"),
        ("-5", "CNY", "positive"),
        ("1.001", "CNY", "decimals"),
        ("10", "USD", "currency"),
    ],
)
def test_a_bad_payment_is_refused_and_changes_nothing(amount: str, currency: str, reason: str) -> None:
    loan = Loan(at(2))
    before = loan.s.model_dump_json()
    event = lifecycle.PaymentReceived(
        payment=Payment(payment_id="P-1", amount=Decimal(amount), currency=currency, paid_at=at(2))
    )
    with pytest.raises(lifecycle.Rejected, match=reason) as refused:
        lifecycle.check(loan.s, event, at(2))
    assert refused.value.kind == "PaymentRejected"
    with pytest.raises(lifecycle.Rejected):
        lifecycle.decide(loan.s, event, at(2))
    assert loan.s.model_dump_json() == before


def test_a_payment_twice_or_after_the_close_is_refused() -> None:
    loan = Loan(at(2))
    loan.pay("100.00", pid="P-1")
    with pytest.raises(lifecycle.Rejected, match="already applied"):
        loan.pay("100.00", pid="P-1")
    loan.pay(str(loan.s.balance.total), pid="P-2")
    with pytest.raises(lifecycle.Rejected, match="closed"):
        loan.pay("1.00", pid="P-3")


def test_a_bank_feed_payment_that_cannot_be_applied_is_recorded_as_rejected() -> None:
    loan = Loan(at(2))
    event = lifecycle.PaymentReceived(
        payment=Payment(payment_id="P-1", amount=Decimal(5), currency="USD", paid_at=at(2)), answer=False
    )
    assert loan.tell(event) is None
    assert actions(loan)[-1] == ("payment", "rejected") and loan.audits()[-1] == "payment_rejected"
    assert loan.s.paid_total == 0


def test_a_request_is_stamped_with_its_own_time_and_the_loop_keeps_the_historys() -> None:
    loan = Loan(at(0))
    loan.pay("100.00", when=at(0, time(15, 0)))
    assert loan.s.timeline[-1].at == at(0, time(15, 0)) and lifecycle.clock_of(loan.s) == at(0)
    [record] = [c for c in loan.ran if isinstance(c, RecordPayment)]
    assert record.req.at == at(0, time(15, 0))


# ------------------------------------------------------------------ tasks and reports


def call_task(loan: Loan) -> str:
    loan.until(at(5, time(12, 0)))
    [task] = loan.s.open_tasks
    return task.task_id


def test_an_answered_call_is_a_conversation_and_not_retried() -> None:
    loan = Loan(at(0))
    task_id = call_task(loan)
    since = len(loan.ran)
    loan.tell(lifecycle.TaskReported(report=TaskReport(task_id=task_id, outcome=TaskOutcome.answered, note="pays")))
    assert loan.kinds(since) == ["close_task", "record_conversation"] and loan.s.retries == []
    assert isinstance(loan.ran[-1], RecordConversation)


def test_an_unanswered_call_is_retried_and_a_wrong_number_asks_a_third_party_once() -> None:
    loan = Loan(at(0))
    loan.tell(lifecycle.TaskReported(report=TaskReport(task_id=call_task(loan), outcome=TaskOutcome.no_answer)))
    assert [r.attempt for r in loan.s.retries] == [2]
    other = Loan(at(0), make_loan(third_party=True))
    other.tell(lifecycle.TaskReported(report=TaskReport(task_id=call_task(other), outcome=TaskOutcome.wrong_number)))
    assert other.s.retries == []
    locate = [c for c in other.ran if isinstance(c, SendMessage) and c.req.template == "locate_request"]
    assert len(locate) == 1 and locate[0].req.recipient == "+8613900000000"


def test_a_report_for_a_task_not_open_is_refused() -> None:
    loan = Loan(at(0))
    with pytest.raises(lifecycle.Rejected, match="not open"):
        loan.tell(lifecycle.TaskReported(report=TaskReport(task_id="nope", outcome=TaskOutcome.answered)))


def test_a_task_without_an_outcome_times_out() -> None:
    loan = Loan(at(0))
    call_task(loan)
    loan.until(at(6, time(12, 0)))
    assert ("call_outcome", "timeout") in actions(loan)


def test_agency_and_court_reports_are_recorded_and_checked() -> None:
    loan = Loan(at(55))
    loan.until(at(140))
    assert loan.s.placement is None and loan.s.case is not None  # recalled at 120, case filed at 135
    with pytest.raises(lifecycle.Rejected, match="not active"):
        loan.tell(lifecycle.AgencyReported(report=AgencyReport(placement_id="x", note="n")))
    loan.tell(lifecycle.CourtReported(report=CourtReport(case_id=loan.s.case.case_id, event="judgment")))
    assert loan.s.case.last_event == "judgment" and loan.audits()[-1] == "court_report"
    placed = Loan(at(55))
    placed.until(at(61))
    assert placed.s.placement is not None
    placed.tell(
        lifecycle.AgencyReported(
            report=AgencyReport(placement_id=placed.s.placement.placement_id, note="reached", contacted=True)
        )
    )
    assert actions(placed)[-1] == ("agency_report", "contacted")


def test_an_agency_contact_is_asked_of_the_guard_and_its_answer_kept() -> None:
    loan = Loan(at(55))
    loan.until(at(61))
    assert loan.s.placement is not None
    req = AgencyContactRequest(placement_id=loan.s.placement.placement_id, channel="phone", agent="ag-1")
    assert loan.tell(lifecycle.AgencyContactAsked(request=req, key="k-1")) == "k-1"
    assert loan.s.agency_answers["k-1"].verdict == "allowed" and actions(loan)[-1] == ("agency_contact", "allowed")
    with pytest.raises(lifecycle.Rejected, match="not active"):
        loan.tell(lifecycle.AgencyContactAsked(request=req.model_copy(update={"placement_id": "x"}), key="k-2"))


def test_an_agency_contact_overtaken_by_a_dispute_is_refused() -> None:
    loan = Loan(at(55))
    loan.until(at(61))
    assert loan.s.placement is not None
    req = AgencyContactRequest(placement_id=loan.s.placement.placement_id, channel="phone")
    [ask] = lifecycle.decide(loan.s, lifecycle.AgencyContactAsked(request=req, key="k"), at(61)).commands
    loan.tell(lifecycle.DisputeRaised(request=DisputeRequest(reason="not mine")))
    allowed = GuardDecision(verdict="allowed", rule="GEN-ALLOWED", at=at(61))
    lifecycle.decide(loan.s, lifecycle.GuardAnswered(key=ask.key, decision=allowed), at(61))
    assert loan.s.agency_answers["k"].rule == "GEN-OVERTAKEN"


def test_opting_out_refuses_that_channel_from_then_on() -> None:
    loan = Loan(at(0))
    decision = loan.tell(lifecycle.OptedOut(request=OptOutRequest(channel="sms")))
    assert decision.accepted and loan.s.opted_out == ["sms"]
    with pytest.raises(lifecycle.Rejected, match="already"):
        loan.tell(lifecycle.OptedOut(request=OptOutRequest(channel="sms")))
    loan.until(at(1, time(12, 0)))
    assert actions(loan)[-1] == ("reminder_first", "refused")


# ------------------------------------------------------------------ negotiation


def test_a_promise_pauses_escalation_and_a_broken_one_resumes_it() -> None:
    loan = Loan(at(2))
    decision = loan.tell(
        lifecycle.PromiseMade(request=PromiseRequest(amount=Decimal(500), date=DUE + timedelta(days=4)))
    )
    assert decision.accepted and loan.s.paused_reason == "promise to pay"
    assert ("paused", "promise to pay") in actions(loan)
    loan.until(at(8))
    assert ("promise", "broken") in actions(loan) and loan.s.paused_reason is None
    assert loan.s.counts.promises_broken == 1 and "promise_broken" in loan.audits()


def test_a_kept_promise_counts_and_a_promise_past_the_limit_is_refused() -> None:
    loan = Loan(at(2))
    with pytest.raises(lifecycle.Rejected, match="more than 14 days"):
        loan.tell(lifecycle.PromiseMade(request=PromiseRequest(amount=Decimal(5), date=DUE + timedelta(days=30))))
    loan.tell(lifecycle.PromiseMade(request=PromiseRequest(amount=Decimal(500), date=DUE + timedelta(days=4))))
    loan.pay("500.00")
    assert loan.s.counts.promises_kept == 1 and loan.s.paused_reason is None


def test_a_plan_runs_its_instalments_reminds_and_breaks_after_misses() -> None:
    loan = Loan(at(10))
    first = DUE + timedelta(days=15)
    loan.tell(lifecycle.PlanProposed(request=PlanProposal(instalments=4, first_due=first, frequency="weekly")))
    assert loan.s.paused_reason == "instalment plan"
    assert loan.s.plan is not None and len(loan.s.plan.instalments) == 4
    loan.until(at(13))
    assert any(isinstance(c, SendMessage) and c.req.template == "plan_reminder" for c in loan.ran)
    loan.until(at(40))
    assert ("plan", "broken") in actions(loan) and loan.s.counts.plans_broken == 1


def test_a_plan_beyond_the_policy_is_refused() -> None:
    loan = Loan(at(10))
    with pytest.raises(lifecycle.Rejected, match="exceed the maximum"):
        loan.tell(lifecycle.PlanProposed(request=PlanProposal(instalments=40, first_due=DUE + timedelta(days=15))))


def test_a_paid_settlement_waives_the_rest_and_a_lapsed_one_resumes() -> None:
    loan = Loan(at(40))  # middle stage: up to 10 % off
    total = loan.s.balance.total
    offer = (total * Decimal("0.92")).quantize(Decimal("0.01"))
    loan.tell(lifecycle.SettlementOffered(request=SettlementOffer(amount=offer, deadline=DUE + timedelta(days=50))))
    loan.pay(str(offer))
    assert loan.s.closed_as is Stage.settled and any(isinstance(c, Waive) for c in loan.ran)
    lapsed = Loan(at(40))
    lapsed.tell(lifecycle.SettlementOffered(request=SettlementOffer(amount=offer, deadline=DUE + timedelta(days=45))))
    lapsed.until(at(47))
    assert ("settlement", "lapsed") in actions(lapsed) and lapsed.s.paused_reason is None
    with pytest.raises(lifecycle.Rejected, match="exceeds"):
        lapsed.tell(
            lifecycle.SettlementOffered(request=SettlementOffer(amount=total / 2, deadline=DUE + timedelta(days=50)))
        )


def test_hardship_holds_everything_and_its_review_decides() -> None:
    loan = Loan(at(55))
    loan.until(at(61))
    since = len(loan.ran)
    loan.tell(lifecycle.HardshipReported(request=HardshipReport(reason="lost job", evidence_ref="DOC-1")))
    kinds = loan.kinds(since)
    assert "recall" in kinds and "create_task" in kinds and loan.s.paused_reason == "hardship breathing space"
    review = next(c for c in loan.ran[since:] if isinstance(c, CreateTask))
    assert review.req.kind == "hardship_review" and review.req.queue == "hardship-review"
    with pytest.raises(lifecycle.Rejected, match="already running"):
        loan.tell(lifecycle.HardshipReported(request=HardshipReport(reason="again")))
    loan.until(at(80))
    assert not any(isinstance(c, (PostFee, SendMessage)) for c in loan.ran[since:])
    loan.tell(lifecycle.HardshipReviewed(request=HardshipDecision(outcome="waive_fees", note="ok")), at(80))
    assert loan.s.holds == [] and loan.s.balance.fees == 0 and loan.s.balance.penalties == 0
    # held from the clock at DPD 60
    assert "hardship_ended" in loan.audits() and actions(loan)[-1] == ("resumed", "20 day(s) paused")


@pytest.mark.parametrize("outcome", ["offer_plan", "waive_interest", "extend_term", "resume", "refer_to_write_off"])
def test_each_hardship_review_outcome(outcome: str) -> None:
    loan = Loan(at(10))
    loan.tell(lifecycle.HardshipReported(request=HardshipReport(reason="illness")))
    plan = PlanProposal(instalments=3, first_due=DUE + timedelta(days=20)) if outcome == "offer_plan" else None
    decision = loan.tell(
        lifecycle.HardshipReviewed(
            request=HardshipDecision(outcome=outcome, plan=plan, extend_days=30 if outcome == "extend_term" else None)
        )
    )
    assert decision.accepted
    expected = {
        "offer_plan": "instalment plan",
        "waive_interest": None,
        "extend_term": "hardship breathing space",
        "resume": None,
        "refer_to_write_off": None,
    }[outcome]
    assert loan.s.paused_reason == expected
    assert (loan.s.charged_off_at is not None) == (outcome == "refer_to_write_off")


def test_the_breathing_space_ends_by_itself() -> None:
    loan = Loan(at(10))
    loan.tell(lifecycle.HardshipReported(request=HardshipReport(reason="illness")))
    loan.until(at(75))
    assert ("hardship", "ended") in actions(loan) and loan.s.holds == [] and "hardship_ended" in loan.audits()


def test_a_dispute_silences_the_loan_until_resolved() -> None:
    loan = Loan(at(55))
    loan.until(at(61))
    loan.tell(lifecycle.DisputeRaised(request=DisputeRequest(reason="not my loan")), at(61))
    assert lifecycle.next_wake(loan.s) is None and loan.s.placement is None  # nothing dated: a request moves it
    with pytest.raises(lifecycle.Rejected, match="dispute is open"):
        loan.tell(lifecycle.PromiseMade(request=PromiseRequest(amount=Decimal(5), date=DUE + timedelta(days=62))))
    loan.tell(lifecycle.DisputeResolved(request=DisputeResolution(upheld=False)), at(70))
    assert loan.s.paused_reason is None and loan.s.paused_days == 9


def test_an_upheld_dispute_cancels_the_balance_and_closes() -> None:
    loan = Loan(at(20))
    loan.tell(lifecycle.DisputeRaised(request=DisputeRequest(reason="identity")))
    loan.tell(lifecycle.DisputeResolved(request=DisputeResolution(upheld=True)))
    assert loan.s.closed_as is Stage.dispute_upheld and loan.s.balance.total == 0
    cancellation = next(c for c in loan.ran if isinstance(c, Waive))
    assert cancellation.req.kind == "cancellation" and actions(loan)[-1] == ("collection_closed", "dispute_upheld")
    assert not any(isinstance(c, SendMessage) and "confirmation" in c.req.template for c in loan.ran)


def test_a_stop_goes_to_legal_review_or_write_off() -> None:
    loan = Loan(at(140))
    loan.tell(lifecycle.StopRequested(request=StopRequest(reason="bankruptcy", evidence_ref="COURT-1")))
    legal = next(c for c in loan.ran if isinstance(c, CreateTask))
    assert legal.req.kind == "legal_review" and loan.s.stop is not None and loan.s.charged_off_at is None
    with pytest.raises(lifecycle.Rejected, match="already stopped"):
        loan.tell(lifecycle.StopRequested(request=StopRequest(reason="cease_contact")))
    loan.tell(lifecycle.StopRequested(request=StopRequest(reason="bankruptcy", route="write_off")))
    assert loan.s.charged_off_at is not None and any(isinstance(c, ChargeOff) for c in loan.ran)
    dead = Loan(at(61))
    dead.until(at(61))
    dead.tell(lifecycle.StopRequested(request=StopRequest(reason="death")))
    assert dead.s.charged_off_at is not None and any(isinstance(c, Recall) for c in dead.ran)


def test_a_refused_request_changes_nothing() -> None:
    loan = Loan(at(20))
    loan.tell(lifecycle.DisputeRaised(request=DisputeRequest(reason="identity")))
    before = loan.s.model_dump_json()
    for event in (
        lifecycle.PlanProposed(request=PlanProposal(instalments=2, first_due=DUE + timedelta(days=25))),
        lifecycle.DisputeRaised(request=DisputeRequest(reason="again")),
        lifecycle.HardshipReviewed(request=HardshipDecision(outcome="resume")),
    ):
        with pytest.raises(lifecycle.Rejected):
            lifecycle.decide(loan.s, event, at(21))
    assert loan.s.model_dump_json() == before


# ------------------------------------------------------------------ views


def test_status_and_search_attributes_read_the_state_without_changing_it() -> None:
    loan = Loan(at(0))
    loan.until(at(5, time(12, 0)))
    before = loan.s.model_dump_json()
    status = lifecycle.status(loan.s, at(5, time(13, 0)))
    assert status.days_past_due == 5
    assert status.next_action is not None and status.next_action.startswith("outcome due")
    values = lifecycle.search_values(loan.s, at(40))
    assert values["CollectionStage"] == "middle" and values["CollectionDpdBand"] == "30-59"
    assert values["CollectionOutstandingMinor"] == 1_060_000
    assert loan.s.model_dump_json() == before


def test_every_event_type_is_covered_here() -> None:
    """Keeps this file honest: a new event type needs a test above."""
    import typing

    kinds = {t.__name__ for t in typing.get_args(typing.get_args(lifecycle.Event)[0])}
    source = Path(__file__).read_text(encoding="utf-8")
    assert {k for k in kinds if f"lifecycle.{k}(" not in source} == set()
    for effect in (
        PostFee,
        RecordPayment,
        ChargeOff,
        Waive,
        Audit,
        SendMessage,
        CreateTask,
        CloseTask,
        RecordConversation,
        Place,
        Recall,
    ):
        assert effect.__name__ in source
