"""The async client API the lending platform (and the CLI, `starter.py`) calls: a loan's
collection (`client.loans`: start, hand over, pay, report, negotiate, status), the portfolio
(`client.portfolio`: list, stats, roll-over), the daily scan on demand (`client.scan`) and the
errors (`client.errors`).

May import `infra`, `models` and `workflows` (for the workflows' types, signals and queries);
never activities, db, ops or the entry points. Functions that start a workflow take the task
queue as an argument, else the TEMPORAL_TASK_QUEUE setting."""

from client.errors import LoanNotFound, RequestPending, RequestRejected
from client.loans import (
    StartOutcome,
    get_status,
    hand_over,
    offer_settlement,
    opt_out,
    promise_to_pay,
    propose_plan,
    raise_dispute,
    register_payment,
    report_agency,
    report_court,
    report_hardship,
    report_task_outcome,
    request_agency_contact,
    resolve_dispute,
    review_hardship,
    send_bank_payment,
    start_collection,
    stop_collection,
    wait_quiet,
)
from client.portfolio import list_loans, portfolio_stats, roll_over
from client.protocol import server_now
from client.scan import scan_day, scan_overdue
from infra.temporal import connect

__all__ = [
    "LoanNotFound",
    "RequestPending",
    "RequestRejected",
    "StartOutcome",
    "connect",
    "get_status",
    "hand_over",
    "list_loans",
    "offer_settlement",
    "opt_out",
    "portfolio_stats",
    "promise_to_pay",
    "propose_plan",
    "raise_dispute",
    "register_payment",
    "report_agency",
    "report_court",
    "report_hardship",
    "report_task_outcome",
    "request_agency_contact",
    "resolve_dispute",
    "review_hardship",
    "roll_over",
    "scan_day",
    "scan_overdue",
    "send_bank_payment",
    "server_now",
    "start_collection",
    "stop_collection",
    "wait_quiet",
]
