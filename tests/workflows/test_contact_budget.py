"""One contact budget per person: a borrower with three loans is contacted no more than the
per-person caps allow, and every deferral or refusal cites its rule."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

import starter
from db.contacts import ContactRow
from db.tables import OutboxMessage, TaskRow
from models import Borrower, TaskOutcome, TaskReport
from models.loan import OverdueLoan
from tests.helpers import TEST_POLICIES, Harness, dpd_of, make_loan
from worker import create_worker

POLICIES = TEST_POLICIES


def three_loans(now: datetime, dpd: int) -> list[OverdueLoan]:
    first = make_loan(dpd=dpd, now=now)
    person: Borrower = first.borrower
    return [first] + [make_loan(dpd=dpd, now=now).model_copy(update={"borrower": person}) for _ in range(2)]


def contacts(engine: Engine, borrower_id: str) -> list[ContactRow]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(ContactRow).where(ContactRow.borrower_id == borrower_id).order_by(col(ContactRow.at))
            ).all()
        )


def max_in_window(times: list[datetime], hours: int) -> int:
    window = timedelta(hours=hours)
    return max((sum(1 for u in times if t - window < u <= t) for t in times), default=0)


async def test_three_loans_share_one_message_budget(harness: Harness) -> None:
    h = harness
    loans = three_loans(await h.now(), dpd=2)
    for loan in loans:
        await h.start(loan)
    await h.at_dpd(loans[0], 6)

    person = loans[0].borrower.borrower_id
    # each loan: the DPD-1 reminder on joining at DPD 2, then an SMS and an e-mail at DPD 3
    messages = [c.at for c in contacts(h.engine, person) if c.channel in ("sms", "email")]
    assert len(messages) == 9  # every reminder went out in the end, none dropped
    assert max_in_window(messages, 24) <= 3  # CN: at most 3 texts or e-mails a day per person
    outbox = [m for loan in loans for m in h.rows(OutboxMessage, loan.loan_id)]
    assert len(outbox) == 9 and max_in_window(sorted(m.created_at for m in outbox), 24) <= 3

    deferred = [e for loan in loans for e in (await h.status(loan)).timeline if e.outcome == "deferred"]
    assert len(deferred) >= 3 and all(e.detail.startswith("CN-MESSAGES-3-PER-DAY") for e in deferred)


async def test_a_conversation_on_one_loan_quiets_calls_on_the_others(
    env: WorkflowEnvironment, db_url: str, engine: Engine
) -> None:
    """Regulation F: no call within 7 days after a conversation, whichever loan it was about."""
    queue = f"test-{uuid.uuid4()}"
    h = Harness(env=env, engine=engine, task_queue=queue)
    async with create_worker(env.client, task_queue=queue, database_url=db_url, policies_dir=POLICIES):
        loans = three_loans(await h.now(), dpd=4)
        for loan in loans:
            await h.start(loan, policy="us")
        await h.at_dpd(loans[0], 5)
        await starter.report_task_outcome(
            h.client, loans[0].loan_id, TaskReport(task_id=f"{loans[0].loan_id}/call@5/1", outcome=TaskOutcome.answered)
        )
        for loan in loans[1:]:
            await starter.report_task_outcome(
                h.client, loan.loan_id, TaskReport(task_id=f"{loan.loan_id}/call@5/1", outcome=TaskOutcome.no_answer)
            )
        await h.at_dpd(loans[0], 20)
        statuses = [await h.status(loan) for loan in loans]

    refused = [e for st in statuses[1:] for e in st.timeline if e.outcome == "refused"]
    assert refused and all("1006.14(b)(2)(ii)" in e.detail for e in refused)
    person = loans[0].borrower.borrower_id
    calls = [dpd_of(c.at, loans[0]) for c in contacts(engine, person) if c.channel == "phone"]
    assert calls[:3] == [5, 5, 5] and all(d >= 12 for d in calls[3:])  # quiet until day 5 + 7
    tasks = [t for loan in loans for t in h.rows(TaskRow, loan.loan_id)]
    assert all(dpd_of(t.created_at, loans[0]) not in range(6, 12) for t in tasks)


async def test_opt_out_and_agency_slots_go_through_the_guard(harness: Harness) -> None:
    from models.events import AgencyContactRequest, OptOutRequest

    h = harness
    loan = make_loan(dpd=58, now=await h.now())
    await h.start(loan)
    await h.at_dpd(loan, 61)  # placed with the agency at DPD 60
    placement = (await h.status(loan)).placement
    assert placement is not None
    assert (await starter.opt_out(h.client, loan.loan_id, OptOutRequest(channel="phone"))).accepted
    again = await starter.opt_out(h.client, loan.loan_id, OptOutRequest(channel="phone"))
    assert not again.accepted and "already opted out" in again.reason
    refused = await starter.request_agency_contact(
        h.client, loan.loan_id, AgencyContactRequest(placement_id=placement.placement_id, channel="phone")
    )
    assert (refused.verdict, refused.rule) == ("refused", "CN-OPT-OUT")
    texts = [
        await starter.request_agency_contact(
            h.client, loan.loan_id, AgencyContactRequest(placement_id=placement.placement_id, channel="sms")
        )
        for _ in range(4)
    ]
    assert [t.verdict for t in texts] == ["allowed", "allowed", "allowed", "deferred"]
    assert texts[3].rule == "CN-MESSAGES-3-PER-DAY"
    person = loan.borrower.borrower_id
    assert [c.purpose for c in contacts(h.engine, person) if c.channel == "sms"].count("agency") == 3
