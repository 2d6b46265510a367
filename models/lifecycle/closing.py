"""How a loan's collection ends: paid, settled, dispute upheld, or written off at the end of
recovery. Everything closes at once, in the decision that closed it: open tasks are cancelled, the
agency recalled, the borrower thanked (paid or settled, unless collection was stopped), and the
close is recorded. The shell completes the workflow once these effects are done; the timeline
says `collection_closed` when the close's audit entry is written, after the confirmation."""

from __future__ import annotations

from models.lifecycle.contacts import cancel_tasks, recall, send
from models.lifecycle.step import Step
from models.loan import Stage


def close(step: Step, as_: Stage) -> None:
    s = step.s
    s.closed_as, s.closed_at = as_, step.now
    reason = str(as_)
    cancel_tasks(step, f"loan closed ({reason})")
    recall(step, f"loan closed ({reason})")
    if as_ in (Stage.paid, Stage.settled) and s.stop is None:
        channel = "sms" if s.loan.borrower.phone else "email"
        template = "paid_confirmation" if as_ is Stage.paid else "settled_confirmation"
        send(step, reason, template, channel, purpose="transactional")
    step.record("closed", CLOSED)  # on the timeline once it is on record (`closed_on_record`)


CLOSED = "collection_closed"


def closed_on_record(step: Step) -> None:
    """The close's audit entry is written: the timeline's last word on the loan."""
    step.note(CLOSED, outcome=str(step.s.closed_as))
