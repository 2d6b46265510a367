"""Outcomes of people's tasks, agency and court reports, and policies that cannot load."""

from __future__ import annotations

import uuid
from datetime import time
from pathlib import Path

import pytest
from sqlalchemy import Engine
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

import starter
from db.tables import AuditRow, TaskRow
from models import AgencyReport, CourtReport, TaskOutcome, TaskReport
from tests.helpers import TEST_POLICIES, Harness, dpd_of, make_loan
from worker import create_worker


async def test_answered_call_is_recorded_and_not_retried(harness: Harness) -> None:
    loan = make_loan(dpd=0, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 5)
    task_id = f"{loan.loan_id}/call@5/1"
    status = await starter.report_task_outcome(
        harness.client,
        loan.loan_id,
        TaskReport(task_id=task_id, outcome=TaskOutcome.answered, note="will pay Friday", recording_ref="rec-1"),
    )
    assert status.open_tasks == []
    await harness.at_dpd(loan, 14)
    status = await harness.status(loan)
    calls = [e for e in status.timeline if e.action.startswith("call_")]
    assert [(e.action, e.outcome) for e in calls] == [("call_task", "created"), ("call_outcome", "answered")]
    row = harness.rows(TaskRow, loan.loan_id)[0]
    assert (row.status, row.outcome, row.note, row.recording_ref) == ("closed", "answered", "will pay Friday", "rec-1")


async def test_unanswered_call_is_retried_and_wrong_number_is_not(harness: Harness) -> None:
    loan = make_loan(dpd=0, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 5)
    await starter.report_task_outcome(
        harness.client, loan.loan_id, TaskReport(task_id=f"{loan.loan_id}/call@5/1", outcome=TaskOutcome.no_answer)
    )
    await harness.at_dpd(loan, 6, time(13, 0))  # the retry is due 24 h after the report
    status = await harness.status(loan)
    assert [t.task_id for t in status.open_tasks] == [f"{loan.loan_id}/call@5/2"]
    await starter.report_task_outcome(
        harness.client,
        loan.loan_id,
        TaskReport(task_id=f"{loan.loan_id}/call@5/2", outcome=TaskOutcome.wrong_number),
    )
    await harness.at_dpd(loan, 14)
    tasks = [t.task_id.rsplit("/", 2)[-2:] for t in harness.rows(TaskRow, loan.loan_id)]
    assert tasks == [["call@5", "1"], ["call@5", "2"]]


async def test_report_for_a_task_that_is_not_open_is_rejected(harness: Harness) -> None:
    loan = make_loan(dpd=0, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 2)
    before = await harness.status(loan)
    with pytest.raises(starter.RequestRejected, match="is not open"):
        await starter.report_task_outcome(
            harness.client, loan.loan_id, TaskReport(task_id="nonsense", outcome=TaskOutcome.answered)
        )
    assert len((await harness.status(loan)).timeline) == len(before.timeline)


async def test_agency_and_court_reports_reach_the_timeline_and_the_record(harness: Harness) -> None:
    loan = make_loan(dpd=55, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 70)
    status = await harness.status(loan)
    assert status.placement is not None and dpd_of(status.placement.recall_at, loan) == 120
    with pytest.raises(starter.RequestRejected):
        await starter.report_agency(harness.client, loan.loan_id, AgencyReport(placement_id="other", note="x"))
    await starter.report_agency(
        harness.client,
        loan.loan_id,
        AgencyReport(
            placement_id=status.placement.placement_id, note="borrower reached, disputes fees", contacted=True
        ),
    )
    with pytest.raises(starter.RequestRejected, match="not open"):
        await starter.report_court(harness.client, loan.loan_id, CourtReport(case_id="c", event="hearing"))

    await harness.at_dpd(loan, 140)
    status = await harness.status(loan)
    assert status.placement is None and status.case is not None
    status = await starter.report_court(
        harness.client, loan.loan_id, CourtReport(case_id=status.case.case_id, event="judgment", note="for lender")
    )
    assert status.case is not None and status.case.last_event == "judgment"
    actions = [(e.action, e.outcome) for e in status.timeline]
    assert ("agency_report", "contacted") in actions and ("court_report", "judgment") in actions
    await harness.quiet(loan)  # the report is answered before its audit entry is written
    audit = [a.action for a in harness.rows(AuditRow, loan.loan_id)]
    assert "agency_report" in audit and "court_report" in audit


async def test_a_broken_policy_fails_the_start_naming_the_field(
    env: WorkflowEnvironment, db_url: str, engine: Engine
) -> None:
    queue = f"test-{uuid.uuid4()}"
    policies = TEST_POLICIES
    loan = make_loan(dpd=1, now=await env.get_current_time())
    async with create_worker(env.client, task_queue=queue, database_url=db_url, policies_dir=policies):
        wf_id = await starter.start_collection(env.client, loan, "broken", task_queue=queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await env.client.get_workflow_handle(wf_id).result()
    message = str(failure.value.cause.__cause__)
    assert "broken.toml" in message and "ladder.0.channels.0" in message


def test_a_policy_whose_template_threatens_is_refused_at_load(tmp_path: Path, engine: Engine) -> None:
    """The linter runs at policy load, under the policy's rule set."""
    import shutil

    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.records import RecordActivities
    from infra.settings import ROOT, settings

    templates = tmp_path / "templates"
    shutil.copytree(settings().templates_dir, templates)
    (templates / "en" / "reminder_first.sms.j2").write_text(
        "{{ lender_name }}: pay {{ amount_due }} or else we tell your employer. Dispute: {{ dispute_contact }}"
    )
    records = RecordActivities(engine, settings().policies_dir, ROOT / "rulesets", templates)
    with pytest.raises(ApplicationError) as refused:
        ActivityEnvironment().run(records.load_policy, "default")
    assert "en/reminder_first.sms.j2" in str(refused.value) and "or else" in str(refused.value)
    assert refused.value.non_retryable
    # the same policy under US rules also needs the opt-out line on texts and e-mails
    (templates / "en" / "reminder_first.sms.j2").write_text(
        "{{ lender_name }}: {{ amount_due }} is overdue. Dispute: {{ dispute_contact }}"
    )
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.toml").write_text(
        (settings().policies_dir / "default.toml").read_text().replace('ruleset = "cn"', 'ruleset = "us"')
    )
    records = RecordActivities(engine, policies, ROOT / "rulesets", templates)
    with pytest.raises(ApplicationError, match="opt-out"):
        ActivityEnvironment().run(records.load_policy, "default")


async def test_wrong_number_asks_a_third_party_without_naming_the_debt(harness: Harness) -> None:
    from models.loan import ThirdParty

    h = harness
    loan = make_loan(dpd=0, now=await h.now())
    borrower = loan.borrower.model_copy(
        update={"third_parties": [ThirdParty(name="王芳", phone="+8613900000001", relation="sister")]}
    )
    loan = loan.model_copy(update={"borrower": borrower})
    await h.start(loan)
    await h.at_dpd(loan, 5)
    await starter.report_task_outcome(
        h.client, loan.loan_id, TaskReport(task_id=f"{loan.loan_id}/call@5/1", outcome=TaskOutcome.wrong_number)
    )
    await h.settle()
    from db.tables import OutboxMessage

    locate = [m for m in h.rows(OutboxMessage, loan.loan_id) if m.template == "locate_request"]
    assert len(locate) == 1 and locate[0].recipient == "+8613900000001"
    body = locate[0].body
    assert "明" in body and "李明" not in body  # the given name only
    for secret in (loan.loan_id, "10,600.00", "逾期", "欠款", "Example Lending"):
        assert secret not in body
