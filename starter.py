"""Client side of collection: the async API the lending platform calls, and a CLI over it.

    python starter.py start loan.json [--policy default]
    python starter.py pay LOAN_ID AMOUNT [--currency CNY] [--payment-id ID]
    python starter.py status LOAN_ID
    python starter.py list [--status running|completed|failed|terminated] [--stage S] [--policy P] [--agency A]
    python starter.py stats [--policy P]
    python starter.py outcome LOAN_ID TASK_ID answered|no_answer|wrong_number|promised|refused
    python starter.py load-sample
    python starter.py promise LOAN_ID AMOUNT YYYY-MM-DD
    python starter.py plan LOAN_ID --instalments N --first-due YYYY-MM-DD [--frequency monthly] [--down-payment X]
    python starter.py settle LOAN_ID AMOUNT DEADLINE
    python starter.py hardship LOAN_ID REASON [--evidence REF]
    python starter.py review LOAN_ID offer_plan|waive_interest|waive_fees|extend_term|resume|refer_to_write_off
    python starter.py dispute LOAN_ID REASON
    python starter.py resolve LOAN_ID upheld|rejected
    python starter.py stop LOAN_ID bankruptcy|death|cease_contact [--route legal_review|write_off]
    python starter.py opt-out LOAN_ID sms|email|phone|letter|visit
    python starter.py audit LOAN_ID [--format json|csv] [--out FILE] [--retention-years N]
    python starter.py scan [--as-of YYYY-MM-DD]
    python starter.py doctor [--limit N]
    python starter.py reset LOAN_ID [--to-event ID] [--reason TEXT] [--dry-run] [--force]

Every command takes --json for machine-readable output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any

from google.protobuf.empty_pb2 import Empty
from pydantic import BaseModel
from sqlmodel import Session
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

import config
import search_attributes as sa
from models import (
    AgencyReport,
    Borrower,
    CollectionInput,
    CollectionStatus,
    CourtReport,
    OverdueLoan,
    Payment,
    PaymentReceipt,
    PaymentRejected,
    Stage,
    TaskReport,
    lifecycle,
)
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
from models.conduct import GuardDecision
from models.events import AgencyContactRequest, OptOutRequest
from models.money import minor_units
from models.protocol import Envelope, Reply, StatusAsked
from models.scan import ScanTotals
from models.schedule import local_date
from workflows.collection import BANK_FEED, CollectionWorkflow

SAMPLE_PORTFOLIO = config.ROOT / "data" / "sample_portfolio.json"


class LoanNotFound(LookupError):
    """No collection workflow exists for this loan id."""


class RequestRejected(ValueError):
    """The loan refused a request (a report for a closed task, an unknown placement...)."""


async def connect(address: str | None = None) -> Client:
    """A Temporal client with the project's data converter (address from TEMPORAL_ADDRESS)."""
    return await config.connect(address)


class StartOutcome(StrEnum):
    """What a request to start a loan's collection found."""

    started = "started"  # a new collection workflow
    running = "running"  # the loan was in collection already: nothing started
    closed = "closed"  # its collection had ended (paid, settled, written off): never collect twice


async def start_collection(
    client: Client, loan: OverdueLoan, policy: str = "default", *, task_queue: str | None = None
) -> str:
    """Start collection for an overdue loan and return its workflow id. Starting a loan that
    is already in collection (or was, and closed) starts nothing and returns the same id."""
    await hand_over(client, loan, policy, task_queue=task_queue)
    return config.workflow_id(loan.loan_id)


async def hand_over(
    client: Client, loan: OverdueLoan, policy: str = "default", *, task_queue: str | None = None
) -> StartOutcome:
    """`start_collection`, saying what happened. The workflow id (`collection-<loan id>`) and
    its policies make a second start of a loan impossible at Temporal, whoever sends it."""
    try:
        handle = await config.with_converter(client).start_workflow(
            CollectionWorkflow.run,
            CollectionInput(loan=loan, policy=policy),
            id=config.workflow_id(loan.loan_id),
            task_queue=config.task_queue(task_queue),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
    except WorkflowAlreadyStartedError:
        return StartOutcome.closed
    return StartOutcome.started if _newly_started(handle) else StartOutcome.running


def _newly_started(handle: WorkflowHandle[Any, Any]) -> bool:
    """The server's `started` flag (false when USE_EXISTING attached to a running workflow).
    temporalio 1.35 keeps the start response on the handle without a public accessor; should
    that change, every start counts as new: only the figures would be wrong, not the starts."""
    response = getattr(handle, "_start_workflow_response", None)
    return bool(getattr(response, "started", True))


async def register_payment(client: Client, loan_id: str, payment: Payment) -> PaymentReceipt:
    """Apply a payment and return the receipt. Raises PaymentRejected (bad amount, currency,
    duplicate id, closed loan) or LoanNotFound; a rejected payment changes nothing."""
    reply = await _ask(client, loan_id, lifecycle.PaymentReceived(payment=payment), PaymentRejected)
    if reply is None:
        return await _update(client, loan_id, "pay", payment, PaymentRejected, PaymentReceipt)  # type: ignore[no-any-return]
    assert reply.receipt is not None
    return reply.receipt


async def send_bank_payment(client: Client, loan_id: str, payment: Payment) -> None:
    """Fire-and-forget payment for bank feeds (a signal); rejections go to the timeline."""
    handle = _handle(client, loan_id)
    if await _is_legacy(handle, loan_id):
        await handle.signal("payment_received", payment)
        return
    env = Envelope(request_id=f"{BANK_FEED}{payment.payment_id}/{uuid.uuid4()}",
                   request=lifecycle.PaymentReceived(payment=payment, answer=False), sent_at=await server_now(client))
    await handle.signal(CollectionWorkflow.request, env)


_TEST_SERVERS: dict[int, bool] = {}
"""Whether a client's server is Temporal's time-skipping test server (by service client)."""


async def server_now(client: Client) -> datetime:
    """Now on the server's clock: the time-skipping test server's virtual time where the client
    talks to one (asked once per client whether it is), else this machine's (UTC). Requests are
    stamped with it: the loan takes a request at the time it was sent, never reading its own
    clock to decide (`models.protocol.Envelope`)."""
    key = id(client.service_client)
    if _TEST_SERVERS.get(key, True):
        try:
            reply = await client.test_service.get_current_time(Empty())
        except RPCError as exc:
            if exc.status == RPCStatusCode.UNIMPLEMENTED:  # a real server: this machine's clock
                _TEST_SERVERS[key] = False
        else:
            _TEST_SERVERS[key] = True
            return reply.time.ToDatetime().replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc)


async def report_task_outcome(client: Client, loan_id: str, report: TaskReport) -> CollectionStatus:
    """Report the outcome of a call or visit task."""
    return await _report(client, loan_id, lifecycle.TaskReported(report=report), "report_task", report)


async def report_agency(client: Client, loan_id: str, report: AgencyReport) -> CollectionStatus:
    """Pass on an agency's progress report."""
    return await _report(client, loan_id, lifecycle.AgencyReported(report=report), "report_agency", report)


async def report_court(client: Client, loan_id: str, report: CourtReport) -> CollectionStatus:
    """Pass on news of the court case."""
    return await _report(client, loan_id, lifecycle.CourtReported(report=report), "report_court", report)


async def promise_to_pay(client: Client, loan_id: str, req: PromiseRequest) -> Decision:
    """Record a promise to pay; escalation pauses until its date plus grace."""
    return await _decide(client, loan_id, lifecycle.PromiseMade(request=req), "promise_to_pay", req)


async def propose_plan(client: Client, loan_id: str, req: PlanProposal) -> Decision:
    """Propose (or renegotiate) an instalment plan; accepted plans pause escalation."""
    return await _decide(client, loan_id, lifecycle.PlanProposed(request=req), "propose_plan", req)


async def offer_settlement(client: Client, loan_id: str, offer: SettlementOffer) -> Decision:
    """Offer a discounted settlement; paid by its deadline, the rest is waived."""
    return await _decide(client, loan_id, lifecycle.SettlementOffered(request=offer), "offer_settlement", offer)


async def report_hardship(client: Client, loan_id: str, report: HardshipReport) -> Decision:
    """Start a breathing space (no contact, no fees) and a hardship review."""
    return await _decide(client, loan_id, lifecycle.HardshipReported(request=report), "report_hardship", report)


async def review_hardship(client: Client, loan_id: str, decision: HardshipDecision) -> Decision:
    """Apply the outcome of a hardship review."""
    return await _decide(client, loan_id, lifecycle.HardshipReviewed(request=decision), "review_hardship", decision)


async def raise_dispute(client: Client, loan_id: str, req: DisputeRequest) -> Decision:
    """Open a dispute: all collection activity stops until it is resolved."""
    return await _decide(client, loan_id, lifecycle.DisputeRaised(request=req), "raise_dispute", req)


async def resolve_dispute(client: Client, loan_id: str, res: DisputeResolution) -> Decision:
    """Resolve the open dispute: upheld closes the loan, rejected resumes collection."""
    return await _decide(client, loan_id, lifecycle.DisputeResolved(request=res), "resolve_dispute", res)


async def stop_collection(client: Client, loan_id: str, req: StopRequest) -> Decision:
    """Stop collection for bankruptcy, death or a cease-contact request."""
    return await _decide(client, loan_id, lifecycle.StopRequested(request=req), "stop_collection", req)


async def opt_out(client: Client, loan_id: str, req: OptOutRequest) -> Decision:
    """The borrower opts out of a channel (a STOP reply, an unsubscribe link, a letter)."""
    return await _decide(client, loan_id, lifecycle.OptedOut(request=req), "opt_out", req)


async def request_agency_contact(client: Client, loan_id: str, req: AgencyContactRequest) -> GuardDecision:
    """An agency asks the guard before it contacts the borrower; it shares the person's
    contact budget with the lender and every other agency. The loan asks the guard from its
    main loop (a handler runs no activity), so the answer comes a moment after the request."""
    reply = await _ask(client, loan_id, lifecycle.AgencyContactAsked(request=req, key="-"), RequestRejected)
    if reply is None:
        return await _update(client, loan_id, "agency_contact", req, RequestRejected, GuardDecision)  # type: ignore[no-any-return]
    assert reply.guard is not None
    return reply.guard


async def get_status(client: Client, loan_id: str, *, fresh: bool = True) -> CollectionStatus:
    """The loan's collection status. For a running loan `fresh` asks the loan (a request: one
    signal, so days past due are as of the server's now); `fresh=False` uses a query (no
    history, figures as of the workflow's last step). A closed loan is always queried."""
    handle = _handle(client, loan_id)
    if fresh:
        try:
            reply = await _ask(client, loan_id, StatusAsked(), RequestRejected)
        except RequestRejected:  # closed meanwhile: the query below answers
            reply = None
        except LoanNotFound:
            raise
        if reply is not None and reply.status is not None:
            return reply.status
        if reply is None and await _is_legacy(handle, loan_id):
            try:
                return await _execute_update(handle, "current_status", result_type=CollectionStatus)  # type: ignore[no-any-return]
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
    return await _query_status(handle, loan_id)


async def _query_status(handle: WorkflowHandle[Any, Any], loan_id: str) -> CollectionStatus:
    give_up = time.monotonic() + STARTING_WAIT
    while True:
        try:
            return await handle.query(CollectionWorkflow.status)  # type: ignore[no-any-return]
        except WorkflowQueryFailedError as exc:
            if "starting" not in str(exc) or time.monotonic() > give_up:
                raise
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise LoanNotFound(f"no collection for loan {loan_id}") from exc
            raise
        await asyncio.sleep(0.1)


async def wait_quiet(client: Client, loan_id: str, timeout: float = 30.0) -> None:
    """Wait until the loan has written the effects of everything it was told (its answers come
    first; the ledger rows, messages and tasks follow at once). Loans of the first workflow
    version and closed loans are always quiet."""
    handle = _handle(client, loan_id)
    give_up = time.monotonic() + timeout
    while True:
        try:
            if not await handle.query(CollectionWorkflow.busy, rpc_timeout=REPLY_RPC_TIMEOUT):
                return
        except WorkflowQueryFailedError as exc:
            if "busy" in str(exc):  # the first version has no such query: it writes before it answers
                return
            if "starting" not in str(exc):
                raise
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise LoanNotFound(f"no collection for loan {loan_id}") from exc
            if exc.status not in _QUERY_TIMEOUTS:
                raise
        if time.monotonic() > give_up:
            raise TimeoutError(f"loan {loan_id} still busy after {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def list_loans(
    client: Client, status: str | None = None, *, stage: str | None = None, policy: str | None = None,
    agency: str | None = None, limit: int | None = 1000,
) -> list[dict[str, Any]]:
    """Loans in collection from the server's visibility store, filtered by workflow status,
    stage, policy and agency (the portfolio's search attributes), newest first."""
    rows = []
    async for wf in config.with_converter(client).list_workflows(_portfolio_query(status, stage, policy, agency),
                                                                  limit=limit):
        attrs = wf.typed_search_attributes
        currency = attrs.get(sa.CURRENCY) or ""
        minor = attrs.get(sa.OUTSTANDING)
        rows.append({
            "loan_id": wf.id.removeprefix(config.WORKFLOW_ID_PREFIX),
            "workflow_id": wf.id,
            "status": wf.status.name.lower() if wf.status else "",
            "stage": attrs.get(sa.STAGE) or "",
            "dpd_band": attrs.get(sa.DPD_BAND) or "",
            "policy": attrs.get(sa.POLICY) or "",
            "agency": attrs.get(sa.AGENCY) or "",
            "currency": currency,
            "outstanding": str(Decimal(minor).scaleb(-minor_units(currency))) if minor is not None and currency else "",
            "started": wf.start_time.isoformat(timespec="seconds"),
            "closed": wf.close_time.isoformat(timespec="seconds") if wf.close_time else "",
        })
    return rows


async def roll_over(client: Client, loan_ids: list[str] | None = None, *, started_before: datetime | None = None) -> list[str]:
    """Ask running loans to continue as new at their next quiet moment, so they take the
    current code's patched branches (see the README's upgrade guide). Either the given loans,
    or every running collection whose current run started before `started_before`. Returns
    the loan ids asked; a loan that is not running is skipped."""
    if loan_ids is None:
        if started_before is None:
            raise ValueError("give loan ids or started_before")
        when = started_before.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = f'{_types_clause()} AND ExecutionStatus="Running" AND StartTime < "{when}"'
        loan_ids = [wf.id.removeprefix(config.WORKFLOW_ID_PREFIX) async for wf in client.list_workflows(query)]
    asked = []
    for loan_id in loan_ids:
        try:
            await _handle(client, loan_id).signal(CollectionWorkflow.roll_over)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue
        asked.append(loan_id)
    return asked


async def portfolio_stats(client: Client, *, policy: str | None = None) -> list[dict[str, Any]]:
    """Loans and outstanding totals per stage and currency, from visibility (no workflow is
    queried, so it costs the same for ten loans or a hundred thousand)."""
    totals: dict[tuple[str, str], list[Any]] = {}
    for row in await list_loans(client, policy=policy, limit=None):
        entry = totals.setdefault((row["stage"] or "starting", row["currency"]), [0, Decimal(0)])
        entry[0] += 1
        entry[1] += Decimal(row["outstanding"] or 0)
    return [
        {"stage": stage, "currency": currency, "loans": count, "outstanding": str(amount)}
        for (stage, currency), (count, amount) in sorted(totals.items())
    ]


def _types_clause() -> str:
    """Loans of either collection workflow type (README: Upgrading a live system)."""
    return "(" + " OR ".join(f"WorkflowType = '{name}'" for name in config.COLLECTION_TYPES) + ")"


def _portfolio_query(status: str | None, stage: str | None, policy: str | None, agency: str | None) -> str:
    clauses = [_types_clause()]
    if status:
        clauses.append(f"ExecutionStatus = '{status.capitalize()}'")
    for key, value in ((sa.STAGE, stage), (sa.POLICY, policy), (sa.AGENCY, agency)):
        if value:
            if "'" in value:
                raise ValueError(f"invalid filter value {value!r}")
            clauses.append(f"{key.name} = '{value}'")
    return " AND ".join(clauses)


async def load_sample_portfolio(client: Client, database_url: str | None = None) -> list[str]:
    """Put the bundled sample loans in the database (once) and start their collection.

    Due dates come from each sample's DPD on the day it is first loaded and are then read
    back from the database, so running this again starts nothing new.
    """
    from db.store import make_engine
    from db.tables import BorrowerRow, LoanRow

    engine = make_engine(database_url or config.settings().database_url)
    samples = json.loads(SAMPLE_PORTFOLIO.read_text(encoding="utf-8"))
    loans = []
    with Session(engine) as session:
        for raw in samples:
            borrower = Borrower(**raw["borrower"])
            row = session.get(LoanRow, raw["loan_id"])
            if row is None:
                if session.get(BorrowerRow, borrower.borrower_id) is None:
                    session.add(BorrowerRow(**borrower.model_dump()))
                    session.flush()
                due = local_date(datetime.now(timezone.utc), borrower.timezone) - timedelta(days=raw["dpd"])
                row = LoanRow(
                    loan_id=raw["loan_id"], borrower_id=borrower.borrower_id, currency=raw["currency"],
                    principal=Decimal(raw["principal"]), interest=Decimal(raw["interest"]),
                    fees=Decimal(raw["fees"]), penalties=Decimal(0), due_date=due,
                )
                session.add(row)
                session.commit()
            loans.append(OverdueLoan(
                loan_id=row.loan_id, borrower=borrower, currency=row.currency, principal=row.principal,
                interest=row.interest, fees=row.fees, penalties=row.penalties, due_date=row.due_date,
            ))
    return [await start_collection(client, loan) for loan in loans]


async def scan_overdue(
    client: Client, as_of: date | None = None, *, scan_id: str | None = None, task_queue: str | None = None,
    page_size: int | None = None, pages_per_run: int | None = None,
) -> ScanTotals:
    """Run the daily scan now and wait for its totals: every loan on the book newly overdue
    on `as_of` (default: today in SCAN_TIMEZONE) is handed to collection, none twice. The
    scan id defaults to `overdue-scan-<date>`: asking again while it runs waits for the same
    scan; asking after it finished scans again (and starts only what is new since). Scans
    with different ids may overlap with each other and with the scheduled one."""
    from models.scan import ScanInput
    from workflows.scan import PRIORITY, OverdueScanWorkflow  # imports the scan activities, which import this module

    cfg = config.settings()
    day = _scan_day(as_of)
    inp = ScanInput(as_of=day, timezone=cfg.scan_timezone, page_size=page_size or cfg.scan_page_size,
                    pages_per_run=pages_per_run or cfg.scan_pages_per_run)
    handle = await config.with_converter(client).start_workflow(
        OverdueScanWorkflow.run, inp, id=scan_id or f"overdue-scan-{day.isoformat()}",
        task_queue=config.task_queue(task_queue),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, priority=PRIORITY,
    )
    return await handle.result()


def _scan_day(as_of: date | None) -> date:
    return as_of or local_date(datetime.now(timezone.utc), config.settings().scan_timezone)


# ------------------------------------------------------------------------- audit export
# Reads the database directly: needs no Temporal server and no worker.

AUDIT_COLUMNS = ("seq", "key", "loan_id", "at", "actor", "action", "stage", "rule_id", "evidence_ref", "detail",
                 "prev_hash", "hash", "recorded_at")
"""The columns of an exported audit entry (`at` is the canonical UTC time the hash covers,
`detail` the stored JSON text), so an export can be verified on its own with
`models.audit.verify_chain`."""


def export_audit(
    loan_id: str, database_url: str | None = None, *, retention_years: int | None = None
) -> tuple[list[dict[str, Any]], list[str], date | None]:
    """A loan's evidential record: its audit entries in chain order (as dicts with
    AUDIT_COLUMNS), the problems the hash chain shows (empty: intact) and the date until
    which the record must be kept (the last entry's UTC date plus `retention_years`, by
    default the retention of the rule set of the loan's policy; None for a loan with no
    entries). Reads DATABASE_URL unless `database_url` is given."""
    from sqlmodel import create_engine, select

    from db.tables import AuditRow
    from models.audit import canonical_time, verify_chain

    url = database_url or config.settings().database_url
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if path and path != ":memory:" and not Path(path).exists():
        raise FileNotFoundError(f"no database at {path}")
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            query = select(AuditRow).where(AuditRow.loan_id == loan_id)
            rows = session.exec(query.order_by(AuditRow.seq, AuditRow.id)).all()  # type: ignore[arg-type]
            if retention_years is None:
                retention_years = _retention_years(session, loan_id)
    finally:
        engine.dispose()
    entries = [
        {
            **{name: getattr(row, name) for name in AUDIT_COLUMNS},
            "at": canonical_time(row.at),
            "recorded_at": canonical_time(row.recorded_at),
        }
        for row in rows
    ]
    retain_until = _years_after(rows[-1].at.date(), retention_years) if rows else None
    return entries, verify_chain(entries), retain_until


def _retention_years(session: Session, loan_id: str) -> int:
    """Records are kept as long as the rule set of the loan's policy says (5 years if unknown)."""
    from db.tables import LoanRow
    from models.conduct import load_ruleset
    from models.policy import load_policy

    cfg = config.settings()
    row = session.get(LoanRow, loan_id)
    try:
        policy = load_policy(row.policy if row else "default", cfg.policies_dir)
        return load_ruleset(policy.conduct.ruleset, cfg.rulesets_dir, policy.conduct.overrides).retention_years
    except ValueError:
        return 5


def _years_between(at: str, until: date | None) -> int | None:
    return None if until is None else until.year - datetime.fromisoformat(at).year


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _audit_parser(sub: Any) -> None:
    p = sub.add_parser("audit", help="export a loan's audit record (JSON or CSV) and verify its hash chain")
    p.add_argument("loan_id")
    p.add_argument("--format", choices=["json", "csv"], help="default json")
    p.add_argument("--out", help="write the export to this file (default: standard output)")
    p.add_argument("--retention-years", type=int,
                   help="years the record is kept after its last entry (default: the loan's rule set)")


def _audit_cli(args: argparse.Namespace) -> int:
    """`audit LOAN_ID`: the export on stdout (or --out), the verdict on stderr; exit code 3
    when the chain is broken, 2 for a loan without entries, 1 when the database is unreadable."""
    import csv
    import io

    from sqlalchemy.exc import SQLAlchemyError

    from models.audit import GENESIS

    try:
        entries, problems, retain_until = export_audit(args.loan_id, retention_years=args.retention_years)
    except (OSError, SQLAlchemyError) as exc:
        print(f"error: cannot read the audit record: {exc}", file=sys.stderr)
        return 1
    if not entries:
        print(f"error: no audit entries for loan {args.loan_id}", file=sys.stderr)
        return 2
    if (args.format or "json") == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=AUDIT_COLUMNS)
        writer.writeheader()
        writer.writerows(entries)
        text = buffer.getvalue()
    else:
        text = json.dumps({
            "loan_id": args.loan_id,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "retention_years": args.retention_years or _years_between(entries[-1]["at"], retain_until),
            "retain_until": retain_until.isoformat() if retain_until else None,
            "chain": {"algorithm": "sha256", "genesis": GENESIS, "intact": not problems, "entries": len(entries),
                      "head": entries[-1]["hash"], "problems": problems},
            "entries": entries,
        }, ensure_ascii=False, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8", newline="")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"chain broken ({len(problems)} problem(s) in {len(entries)} entries)", file=sys.stderr)
        return 3
    print(f"chain intact ({len(entries)} entries)", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------- internals


def _handle(client: Client, loan_id: str) -> WorkflowHandle[Any, Any]:
    return config.with_converter(client).get_workflow_handle(config.workflow_id(loan_id))


async def _ask(client: Client, loan_id: str, request: Any, rejected: type[Exception]) -> Reply | None:
    """One request to a loan (`models.protocol`): send it by signal, read its answer by query.
    Raises `rejected` with the reason (nothing changed), LoanNotFound, or RequestPending if no
    answer came in time. None: the loan runs the first workflow version, which takes updates
    (the caller falls back to them)."""
    handle = _handle(client, loan_id)
    if await _is_legacy(handle, loan_id):
        return None
    env = Envelope(request_id=str(uuid.uuid4()), request=request, sent_at=await server_now(client))
    try:
        await handle.signal(CollectionWorkflow.request, env)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise await _not_running(handle, loan_id, rejected) from exc
    reply = await _answer(handle, env.request_id)
    if reply.refused:
        raise rejected(reply.reason)
    return reply


_TYPES: dict[str, str] = {}
"""Workflow type by loan id, as found (a loan's type never changes: it continues as new into
its own type, and a closed loan is never started again)."""


async def _is_legacy(handle: WorkflowHandle[Any, Any], loan_id: str) -> bool:
    """Whether the loan runs the first workflow version (type `CollectionWorkflow`)."""
    if loan_id not in _TYPES:
        try:
            _TYPES[loan_id] = (await handle.describe()).workflow_type
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise LoanNotFound(f"no collection for loan {loan_id}") from exc
            raise
        if len(_TYPES) > 100_000:  # a long-running API process: forget the oldest half
            for old in list(_TYPES)[:50_000]:
                del _TYPES[old]
    return _TYPES[loan_id] == "CollectionWorkflow"


_QUERY_TIMEOUTS = (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED)
"""How a query that ran into its deadline fails (the client's `rpc_timeout`, the server's)."""


class RequestPending(TimeoutError):
    """The loan has the request (it is durable) but did not answer in time (no worker?)."""


REPLY_WAIT = 60.0
"""Seconds a caller waits for a loan's answer (normally tens of milliseconds; an agency's contact
request one guard decision more)."""
REPLY_RPC_TIMEOUT = timedelta(seconds=5)
"""A query that meets the loan continuing as new can wait for the server's 30 s query deadline
(seen on the test server); a shorter deadline and another try answer it from the new run."""


async def _answer(handle: WorkflowHandle[Any, Any], request_id: str) -> Reply:
    """Read the answer with the `reply` query. A query is consistent: sent while the loan is
    taking the request (its workflow task in flight), the server holds it until that task is
    done, so the first one usually has the answer. The next tries back off (a busy loan buffers
    one query at a time and refuses more)."""
    give_up, pause = time.monotonic() + REPLY_WAIT, 0.02
    while True:
        try:
            reply: Reply | None = await handle.query(CollectionWorkflow.reply, request_id, rpc_timeout=REPLY_RPC_TIMEOUT)
        except (WorkflowQueryFailedError, RPCError):
            if time.monotonic() > give_up:
                raise
            reply = None
        if reply is not None and not reply.pending:
            return reply
        if time.monotonic() > give_up:
            raise RequestPending(f"request {request_id} taken by the loan, no answer within {REPLY_WAIT:.0f} s")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


async def _report(client: Client, loan_id: str, request: Any, legacy: str, arg: BaseModel) -> CollectionStatus:
    """A report (task outcome, agency, court): answered with the status as of it."""
    reply = await _ask(client, loan_id, request, RequestRejected)
    if reply is None:
        return await _update(client, loan_id, legacy, arg, RequestRejected, CollectionStatus)  # type: ignore[no-any-return]
    assert reply.status is not None
    return reply.status


async def _decide(client: Client, loan_id: str, request: Any, legacy: str, arg: BaseModel) -> Decision:
    """A negotiation request: accepted, or rejected with the reason (nothing changed)."""
    try:
        reply = await _ask(client, loan_id, request, RequestRejected)
        if reply is None:
            return await _update(client, loan_id, legacy, arg, RequestRejected, Decision)  # type: ignore[no-any-return]
    except RequestRejected as exc:
        return Decision(accepted=False, reason=str(exc))
    assert reply.decision is not None
    return reply.decision


async def _update(client: Client, loan_id: str, update: str, arg: BaseModel, rejected: type[Exception],
                  result_type: type) -> Any:
    """A validated update to a loan of the first workflow version; SDK failures become the
    caller's exceptions."""
    handle = _handle(client, loan_id)
    try:
        return await _execute_update(handle, update, arg, result_type=result_type)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise rejected(cause.message if isinstance(cause, ApplicationError) else str(cause)) from exc
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise await _not_running(handle, loan_id, rejected) from exc


STARTING_WAIT = 30.0
"""Seconds a request to a loan that is still starting (loading its policy, its first activity,
usually a few tens of milliseconds) is tried again before the refusal is passed on."""


async def _execute_update(handle: WorkflowHandle[Any, Any], update: str, *args: Any, result_type: type) -> Any:
    """`execute_update` (first workflow version), tried again while the loan says it is starting."""
    give_up = time.monotonic() + STARTING_WAIT
    while True:
        try:
            return await handle.execute_update(update, *args, result_type=result_type)
        except WorkflowUpdateFailedError as exc:
            if not _starting(exc.cause) or time.monotonic() > give_up:
                raise
        await asyncio.sleep(0.1)


def _starting(cause: BaseException | None) -> bool:
    return isinstance(cause, ApplicationError) and cause.message.startswith("collection is starting")


async def _not_running(handle: WorkflowHandle[Any, Any], loan_id: str, rejected: type[Exception]) -> Exception:
    try:
        desc = await handle.describe()
    except RPCError:
        return LoanNotFound(f"no collection for loan {loan_id}")
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        final = await handle.query(CollectionWorkflow.status)
        return rejected(f"the loan is closed ({final.stage}); nothing was applied")
    return rejected(f"collection of loan {loan_id} is not running ({desc.status.name.lower() if desc.status else '?'})")


# ------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", help="Temporal address (default TEMPORAL_ADDRESS or localhost:7233)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start collection for a loan from a JSON file (or - for stdin)")
    start.add_argument("file")
    start.add_argument("--policy", default="default")
    pay = sub.add_parser("pay", help="register a payment")
    pay.add_argument("loan_id")
    pay.add_argument("amount")
    pay.add_argument("--currency", help="default: the loan's currency")
    pay.add_argument("--payment-id", help="default: a new unique id")
    pay.add_argument("--paid-at", help="ISO time with zone (default now)")
    status = sub.add_parser("status", help="show a loan's collection status")
    status.add_argument("loan_id")
    listing = sub.add_parser("list", help="list loans in collection (filters: search attributes)")
    listing.add_argument("--status", choices=["running", "completed", "failed", "terminated"])
    listing.add_argument("--stage", choices=[str(x) for x in Stage])
    listing.add_argument("--policy")
    listing.add_argument("--agency")
    stats = sub.add_parser("stats", help="loans and outstanding totals per stage and currency")
    stats.add_argument("--policy")
    outcome = sub.add_parser("outcome", help="report the outcome of a call or visit task")
    outcome.add_argument("loan_id")
    outcome.add_argument("task_id")
    outcome.add_argument("outcome", choices=["answered", "no_answer", "wrong_number", "promised", "refused"])
    outcome.add_argument("--note", default="")
    outcome.add_argument("--recording", default="", help="recording reference (calls, visits)")
    sub.add_parser("load-sample", help="load the sample portfolio and start its collection")
    roll = sub.add_parser("roll-over", help="ask running loans to continue as new (after a deploy)")
    roll.add_argument("loan_ids", nargs="*")
    roll.add_argument("--started-before", help="every running loan whose run started before this ISO time")
    scan = sub.add_parser("scan", help="run the daily overdue scan now and print its totals")
    scan.add_argument("--as-of", type=date.fromisoformat, help="YYYY-MM-DD (default: today in SCAN_TIMEZONE)")
    _negotiation_parsers(sub)
    _audit_parser(sub)
    _doctor_parsers(sub)
    return parser


_NEGOTIATION_COMMANDS = ("promise", "plan", "settle", "hardship", "review", "dispute", "resolve", "stop", "opt-out")


def _negotiation_parsers(sub: Any) -> None:
    by = {"default": "cli", "help": "who asks (recorded on the timeline and in the audit)"}
    p = sub.add_parser("promise", help="record a promise to pay")
    p.add_argument("loan_id")
    p.add_argument("amount")
    p.add_argument("date", type=date.fromisoformat, help="YYYY-MM-DD, the borrower's calendar")
    p.add_argument("--by", **by)
    p = sub.add_parser("plan", help="propose or renegotiate an instalment plan")
    p.add_argument("loan_id")
    _plan_arguments(p, required=True)
    p.add_argument("--by", **by)
    p = sub.add_parser("settle", help="offer a discounted settlement")
    p.add_argument("loan_id")
    p.add_argument("amount")
    p.add_argument("deadline", type=date.fromisoformat)
    p.add_argument("--by", **by)
    p = sub.add_parser("hardship", help="report hardship: breathing space and a review task")
    p.add_argument("loan_id")
    p.add_argument("reason")
    p.add_argument("--evidence", default="")
    p.add_argument("--by", **by)
    p = sub.add_parser("review", help="apply a hardship review outcome")
    p.add_argument("loan_id")
    p.add_argument("outcome", choices=["offer_plan", "waive_interest", "waive_fees", "extend_term", "resume",
                                       "refer_to_write_off"])
    p.add_argument("--extend-days", type=int)
    _plan_arguments(p, required=False)
    p.add_argument("--by", **by)
    p = sub.add_parser("dispute", help="open a dispute: all collection stops")
    p.add_argument("loan_id")
    p.add_argument("reason")
    p.add_argument("--by", **by)
    p = sub.add_parser("resolve", help="resolve the open dispute")
    p.add_argument("loan_id")
    p.add_argument("verdict", choices=["upheld", "rejected"])
    p.add_argument("--note", default="")
    p.add_argument("--by", **by)
    p = sub.add_parser("opt-out", help="the borrower opts out of a channel")
    p.add_argument("loan_id")
    p.add_argument("channel", choices=["sms", "email", "phone", "letter", "visit"])
    p.add_argument("--by", default="borrower")
    p = sub.add_parser("stop", help="stop collection (bankruptcy, death, cease-contact)")
    p.add_argument("loan_id")
    p.add_argument("reason", choices=["bankruptcy", "death", "cease_contact"])
    p.add_argument("--route", choices=["legal_review", "write_off"])
    p.add_argument("--evidence", default="")
    p.add_argument("--by", **by)


def _doctor_parsers(sub: Any) -> None:
    """`doctor` and `reset` (ops.doctor). They also take --json after the command."""
    as_json = {"action": "store_true", "default": argparse.SUPPRESS, "help": "print JSON"}
    p = sub.add_parser("doctor", help="list stuck loans: running, but their workflow task keeps failing")
    p.add_argument("--limit", type=_positive_int, default=100, help="list at most N stuck loans (default 100)")
    p.add_argument("--json", **as_json)
    p = sub.add_parser("reset", help="reset a stuck loan to its last good workflow task (goes on under the current code)")
    p.add_argument("loan_id")
    p.add_argument("--to-event", type=_positive_int, help="reset to this workflow task event id instead "
                   "(default: the latest WORKFLOW_TASK_COMPLETED the current code replays)")
    p.add_argument("--reason", default="", help="why (recorded in the history with the failure)")
    p.add_argument("--dry-run", action="store_true", help="say what would be done and change nothing")
    p.add_argument("--force", action="store_true", help="reset a loan that is not stuck")
    p.add_argument("--json", **as_json)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


async def _doctor_cli(client: Client, args: argparse.Namespace) -> Any:
    from ops import doctor

    if args.command == "doctor":
        return await doctor.find_stuck(client, limit=args.limit)
    return await doctor.reset_loan(client, args.loan_id, to_event=args.to_event, reason=args.reason,
                                   dry_run=args.dry_run, force=args.force)


def _plan_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--instalments", type=int, required=required)
    p.add_argument("--first-due", type=date.fromisoformat, required=required)
    p.add_argument("--frequency", choices=["weekly", "biweekly", "monthly"], default="monthly")
    p.add_argument("--down-payment", default="0")


def _plan_from(args: argparse.Namespace) -> PlanProposal | None:
    if args.instalments is None:
        return None
    return PlanProposal(instalments=args.instalments, first_due=args.first_due, frequency=args.frequency,
                        down_payment=_amount(args.down_payment), made_by=args.by)


def _amount(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise PaymentRejected(f"not an amount: {text!r}") from exc


async def _negotiate(client: Client, args: argparse.Namespace) -> Decision | None:
    if args.command not in _NEGOTIATION_COMMANDS:
        return None
    loan, by = args.loan_id, args.by
    if args.command == "promise":
        return await promise_to_pay(client, loan, PromiseRequest(amount=_amount(args.amount), date=args.date, made_by=by))
    if args.command == "plan":
        return await propose_plan(client, loan, _plan_from(args))  # type: ignore[arg-type]
    if args.command == "settle":
        return await offer_settlement(client, loan, SettlementOffer(
            amount=_amount(args.amount), deadline=args.deadline, made_by=by))
    if args.command == "hardship":
        return await report_hardship(client, loan, HardshipReport(
            reason=args.reason, evidence_ref=args.evidence, reported_by=by))
    if args.command == "review":
        return await review_hardship(client, loan, HardshipDecision(
            outcome=args.outcome, plan=_plan_from(args), extend_days=args.extend_days, decided_by=by))
    if args.command == "dispute":
        return await raise_dispute(client, loan, DisputeRequest(reason=args.reason, raised_by=by))
    if args.command == "resolve":
        return await resolve_dispute(client, loan, DisputeResolution(
            upheld=args.verdict == "upheld", note=args.note, resolved_by=by))
    if args.command == "opt-out":
        return await opt_out(client, loan, OptOutRequest(channel=args.channel, requested_by=by))
    return await stop_collection(client, loan, StopRequest(
        reason=args.reason, route=args.route, evidence_ref=args.evidence, requested_by=by))


async def _run_cli(args: argparse.Namespace) -> Any:
    client = await connect(args.address)
    if args.command == "start":
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        loan = OverdueLoan.model_validate_json(text)
        return {"workflow_id": await start_collection(client, loan, args.policy)}
    decision = await _negotiate(client, args)
    if decision is not None:
        return decision
    if args.command == "pay":
        currency = args.currency or (await get_status(client, args.loan_id)).currency
        amount = _amount(args.amount)
        paid_at = datetime.fromisoformat(args.paid_at) if args.paid_at else datetime.now(timezone.utc)
        payment = Payment(payment_id=args.payment_id or f"cli-{uuid.uuid4()}", amount=amount,
                          currency=currency, paid_at=paid_at, source="cli")
        return await register_payment(client, args.loan_id, payment)
    if args.command == "status":
        return await get_status(client, args.loan_id)
    if args.command == "list":
        return await list_loans(client, args.status, stage=args.stage, policy=args.policy, agency=args.agency)
    if args.command == "stats":
        return {"stats": await portfolio_stats(client, policy=args.policy)}
    if args.command == "outcome":
        report = TaskReport(task_id=args.task_id, outcome=args.outcome, note=args.note,
                            recording_ref=args.recording, reported_by="cli")
        return await report_task_outcome(client, args.loan_id, report)
    if args.command == "load-sample":
        return {"started": await load_sample_portfolio(client)}
    if args.command == "roll-over":
        before = datetime.fromisoformat(args.started_before) if args.started_before else None
        if before is not None and before.tzinfo is None:
            raise SystemExit("--started-before needs a time zone, e.g. 2026-12-01T00:00:00+00:00")
        return {"asked": await roll_over(client, args.loan_ids or None, started_before=before)}
    if args.command == "scan":
        totals = await scan_overdue(client, args.as_of)
        return {"as_of": _scan_day(args.as_of).isoformat(), **totals.model_dump()}
    if args.command in ("doctor", "reset"):
        return await _doctor_cli(client, args)
    raise AssertionError(args.command)


def _print(result: Any, as_json: bool) -> None:
    doctor = sys.modules.get("ops.doctor")  # imported by the doctor and reset commands only
    if as_json:
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    elif doctor and isinstance(result, doctor.DoctorReport):
        print(_format_doctor(result))
    elif doctor and isinstance(result, doctor.ResetOutcome):
        print(_format_reset(result))
    elif isinstance(result, CollectionStatus):
        print(_format_status(result))
    elif isinstance(result, PaymentReceipt):
        print(_format_receipt(result))
    elif isinstance(result, Decision):
        print(f"{'accepted' if result.accepted else 'rejected'}: {result.reason}" + (f" [{result.ref}]" if result.ref else ""))
    elif isinstance(result, list):
        for row in result:
            print(f"{row['loan_id']:<20} {row['status']:<10} {row['stage']:<12} {row['dpd_band']:<8} "
                  f"{row['outstanding']:>12} {row['currency']:<4} {row['agency'] or '-':<16} started {row['started']}")
        print(f"{len(result)} loan(s)")
    elif isinstance(result, dict) and "stats" in result:
        for row in result["stats"]:
            print(f"{row['stage']:<14} {row['currency']:<4} {row['loans']:>7} loans  {row['outstanding']:>16}")
    else:
        for key, value in result.items():
            print(f"{key}: {', '.join(value) if isinstance(value, list) else value}")


def _format_status(st: CollectionStatus) -> str:
    o = st.outstanding
    lines = [
        f"loan {st.loan_id}  stage {st.stage}  DPD {st.days_past_due}  policy {st.policy} ({st.policy_version})",
        f"outstanding {o.total} {st.currency}: principal {o.principal}, interest {o.interest}, "
        f"fees {o.fees}, penalties {o.penalties}; paid so far {st.paid_total}",
        f"next: {st.next_action or '-'} at {st.next_action_at.isoformat(timespec='minutes') if st.next_action_at else '-'}"
        + (f"; paused: {st.paused_reason}" if st.paused_reason else ""),
    ]
    if st.arrangement:
        a = st.arrangement
        lines.append(f"arrangement: {a.kind} {a.ref}: next {a.next_due_amount} due {a.next_due_date} ({a.status})")
    c = st.counts
    if c != type(c)():
        lines.append(f"promises kept/broken {c.promises_kept}/{c.promises_broken}; instalments kept/missed "
                     f"{c.instalments_kept}/{c.instalments_missed}; plans broken {c.plans_broken}; "
                     f"settlements lapsed {c.settlements_lapsed}")
    lines += [f"hold: {h.kind} since {h.started_at:%Y-%m-%d} ({h.reason})" for h in st.holds]
    if st.stop:
        lines.append(f"stopped: {st.stop.reason}, route {st.stop.route}")
    lines += [f"open task {t.task_id} ({t.kind}, queue {t.queue}) outcome due {t.deadline:%Y-%m-%d %H:%M}" for t in st.open_tasks]
    if st.placement:
        lines.append(f"with agency {st.placement.agency} until {st.placement.recall_at:%Y-%m-%d}")
    if st.case:
        lines.append(f"court case {st.case.case_id}: {st.case.last_event}")
    lines.append("timeline:")
    lines += [
        f"  {e.at:%Y-%m-%d %H:%M} {e.action:<22} {e.channel:<7} {e.outcome:<10} {e.detail}" for e in st.timeline
    ]
    return "\n".join(lines)


def _format_doctor(report: Any) -> str:
    lines = []
    for s in report.stuck:
        since = f" since {s.failing_since.isoformat(timespec='seconds')}" if s.failing_since else ""
        lines.append(f"{s.loan_id}  {s.workflow_type}  run {s.run_id}  attempt {s.attempts}  {s.cause}{since}")
        lines.append(f"    {s.message}")
        events = [f"first failing event {s.first_failing_event_id}"]
        if s.named_event_id is not None:
            events.append(f"the failure names event {s.named_event_id}")
        if s.last_completed_event_id is not None:
            events.append(f"last completed workflow task {s.last_completed_event_id}")
        if s.reported_problems:
            events.append("server reports " + ", ".join(s.reported_problems))
        lines.append("    " + "; ".join(events))
    lines.append(f"{len(report.stuck)} stuck loan(s) among {report.examined} running"
                 + ("; `starter.py reset LOAN_ID --dry-run` shows what a reset would do" if report.stuck else ""))
    return "\n".join(lines)


def _format_reset(r: Any) -> str:
    how = "the last workflow task the current code replays" if r.chosen_by == "replay" else "as given"
    point = (f"event {r.reset_event_id} ({how}); the {r.events_discarded} event(s) after it are redone by the new run, "
             "signals and updates among them reapplied")
    head = (f"dry run: would reset loan {r.loan_id} (run {r.run_id}) to {point}" if r.dry_run
            else f"reset loan {r.loan_id}: run {r.run_id} -> new run {r.new_run_id}, from {point}")
    return f"{head}\nreason: {r.reason}"


def _format_receipt(r: PaymentReceipt) -> str:
    a = r.allocation
    return (
        f"payment {r.payment_id}: {r.amount} {r.currency} -> penalties {a.penalties}, fees {a.fees}, "
        f"interest {a.interest}, principal {a.principal}" + (f", unapplied {a.unapplied}" if a.unapplied else "")
        + f"\noutstanding {r.outstanding.total} {r.currency}; stage {r.stage}" + ("; loan closed" if r.closed else "")
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "audit":
        return _audit_cli(args)  # the database only: no Temporal connection
    try:
        result = asyncio.run(_run_cli(args))
        _print(result, args.json)
        if isinstance(result, Decision) and not result.accepted:
            return 2
        if args.command == "doctor" and result.stuck:
            return 3  # like a broken audit chain: something needs an operator
    except (PaymentRejected, RequestRejected, LoanNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc} (is the worker/server running? see README)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    config.exit_process(main())
