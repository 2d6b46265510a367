"""The CLI over the client API (`client/`) and the operator tools (`ops/`): argparse and printing.

    python starter.py start loan.json [--policy auto]
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
    python starter.py webhook add URL [--secret S] [--events a,b|*]
    python starter.py webhook list
    python starter.py webhook remove SUBSCRIBER_ID
    python starter.py webhook deliveries [--loan ID] [--subscriber ID] [--event ID] [--limit N]
    python starter.py user add NAME --role collector|supervisor [--queue Q ...] [--language zh|en] [--password-stdin]
    python starter.py user list
    python starter.py user unlock NAME
    python starter.py experiment start FILE | pause NAME | resume NAME | list | show NAME
    python starter.py experiment end NAME --winner ARM_OR_POLICY [--segment S]

Every command takes --json for machine-readable output.

This module also re-exports the client API under the names it has always had here
(`starter.start_collection`, `starter.register_payment`, `starter.get_status`, the negotiation
functions, `starter.export_audit`, `starter.load_sample_portfolio`, ...): code that calls the API
should import `client` (or `ops`) instead. Only entry points, tests and bench import this module
(tests/unit/test_layout.py).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import tomllib
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client

from api.tokens import ROLES, create_token, list_tokens, revoke_token
from client import (
    LoanNotFound,
    RequestPending,
    RequestRejected,
    StartOutcome,
    connect,
    get_status,
    hand_over,
    list_loans,
    offer_settlement,
    opt_out,
    portfolio_stats,
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
    roll_over,
    scan_day,
    scan_overdue,
    send_bank_payment,
    server_now,
    start_collection,
    stop_collection,
    wait_quiet,
)
from desk.users import LANGUAGES as DESK_LANGUAGES
from desk.users import ROLES as DESK_ROLES
from desk.users import create_user, list_users, unlock_user
from infra.options import REPLY_RPC_TIMEOUT, REPLY_WAIT, STARTING_WAIT
from infra.process import exit_process
from infra.settings import settings
from models import (
    AgencyReport,
    Borrower,
    CollectionStatus,
    CourtReport,
    OverdueLoan,
    Payment,
    PaymentReceipt,
    PaymentRejected,
    Stage,
    TaskReport,
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
from models.experiment import AUTO
from models.scan import ScanTotals
from ops import experiments
from ops.audit import AUDIT_COLUMNS, chain_summary, export_audit, to_csv, years_between
from ops.sample import SAMPLE_PORTFOLIO, load_sample_portfolio

__all__ = [  # the client API, re-exported under its old names (module docstring)
    "AUDIT_COLUMNS",
    "REPLY_RPC_TIMEOUT",
    "REPLY_WAIT",
    "SAMPLE_PORTFOLIO",
    "STARTING_WAIT",
    "AgencyContactRequest",
    "AgencyReport",
    "Borrower",
    "CollectionStatus",
    "CourtReport",
    "Decision",
    "DisputeRequest",
    "DisputeResolution",
    "GuardDecision",
    "HardshipDecision",
    "HardshipReport",
    "LoanNotFound",
    "OptOutRequest",
    "OverdueLoan",
    "Payment",
    "PaymentReceipt",
    "PaymentRejected",
    "PlanProposal",
    "PromiseRequest",
    "RequestPending",
    "RequestRejected",
    "ScanTotals",
    "SettlementOffer",
    "Stage",
    "StartOutcome",
    "StopRequest",
    "TaskReport",
    "connect",
    "export_audit",
    "get_status",
    "hand_over",
    "list_loans",
    "load_sample_portfolio",
    "main",
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
    "scan_overdue",
    "send_bank_payment",
    "server_now",
    "start_collection",
    "stop_collection",
    "wait_quiet",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", help="Temporal address (default TEMPORAL_ADDRESS or localhost:7233)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start collection for a loan from a JSON file (or - for stdin)")
    start.add_argument("file")
    start.add_argument(
        "--policy", help=f"default: the file's `policy`, else {AUTO} (screened and assigned: docs/strategy.md)"
    )
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
    _token_parsers(sub)
    _user_parsers(sub)
    _webhook_parsers(sub)
    _experiment_parsers(sub)
    _report_parser(sub)
    _simulate_parser(sub)
    return parser


def _experiment_parsers(sub: Any) -> None:
    """`experiment start|pause|resume|end|list|show`: champion/challenger tests (the database only)."""
    exp = sub.add_parser("experiment", help="champion/challenger experiments: start, pause, resume, end, list, show")
    verbs = exp.add_subparsers(dest="experiment_command", required=True)
    start = verbs.add_parser(
        "start", help="start an experiment from its TOML (a path, or a name in strategies/experiments/)"
    )
    start.add_argument("file")
    for verb, text in (("pause", "new loans get the champion until it resumes"), ("resume", "split new loans again")):
        verbs.add_parser(verb, help=text).add_argument("name")
    end = verbs.add_parser("end", help="end it: new loans get the winner; loans in flight keep their arm")
    end.add_argument("name")
    end.add_argument("--winner", required=True, help="an arm (champion, a challenger's name) or a policy name")
    end.add_argument("--segment", help="only this segment (default: every segment that has the arm)")
    verbs.add_parser("list", help="every experiment, newest first")
    verbs.add_parser("show", help="an experiment with its definition").add_argument("name")


def _experiment_cli(args: argparse.Namespace) -> int:
    from db import migrate
    from db.store import make_engine

    url = settings().database_url
    migrate.upgrade(url)  # the experiments table may be newer than the worker that last ran
    engine = make_engine(url)
    verb = args.experiment_command
    try:
        if verb == "start":
            text, source = experiments.read_definition(args.file)
            result: Any = experiments.start(engine, text, source)
        elif verb in ("pause", "resume", "show"):
            result = {"pause": experiments.pause, "resume": experiments.resume, "show": experiments.get}[verb](
                engine, args.name
            )
        elif verb == "end":
            result = experiments.end(engine, args.name, args.winner, args.segment)
        else:
            result = experiments.list_all(engine)
    except (*experiments.DEFINITION_ERRORS, experiments.ExperimentConflict, experiments.ExperimentNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for row in result if isinstance(result, list) else [result]:
        winners = ", ".join(f"{k}={v}" for k, v in row["winners"].items())
        print(
            f"{row['name']}  {row['status']:<8} segmentation {row['segmentation']}  started {row['started_at']}"
            + (f"  ended {row['ended_at']}" if row["ended_at"] else "")
            + (f"  winners {winners}" if winners else "")
        )
    if verb == "show":
        print(result["definition"])
    return 0


def _token_parsers(sub: Any) -> None:
    """`token create|list|revoke`: the HTTP API's bearer tokens (the database only)."""
    token = sub.add_parser("token", help="HTTP API tokens: create (shown once), list, revoke")
    verbs = token.add_subparsers(dest="token_command", required=True)
    create = verbs.add_parser("create", help="make a token and print it (the only time it is shown)")
    create.add_argument("name", help="who holds it (the actor on loans' timelines and audit records)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--agency", help="the agency an agency token acts for")
    create.add_argument("--queue", action="append", default=[], help="a task queue a collector works (repeat)")
    verbs.add_parser("list", help="every token (never its secret)")
    revoke = verbs.add_parser("revoke", help="revoke a token by its id (the part after lc_, before the next _)")
    revoke.add_argument("token_id")


def _token_cli(args: argparse.Namespace) -> int:
    url = settings().database_url
    try:
        if args.token_command == "create":
            print(create_token(url, args.name, args.role, args.agency, queues=args.queue))
            print("keep it now: only its hash is stored", file=sys.stderr)
            return 0
        if args.token_command == "list":
            rows = list_tokens(url)
            if args.json:
                print(json.dumps(rows, indent=2))
            for r in [] if args.json else rows:
                state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
                extra = f" agency={r['agency']}" if r["agency"] else f" queues={r['queues']}" if r["queues"] else ""
                print(f"{r['token_id']}  {r['role']:<10} {r['name']}{extra}  ({state}, created {r['created_at']})")
            return 0
        if revoke_token(url, args.token_id):
            print(f"revoked {args.token_id}")
            return 0
        print(f"error: no active token {args.token_id}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _user_parsers(sub: Any) -> None:
    """`user add|list|unlock`: the collectors' desk's users (the database only)."""
    user = sub.add_parser("user", help="desk users: add (password asked), list, unlock")
    verbs = user.add_subparsers(dest="user_command", required=True)
    add = verbs.add_parser("add", help="add a desk user; the password is asked (or read with --password-stdin)")
    add.add_argument("name", help="the sign-in name (the actor on loans' timelines: collector:NAME)")
    add.add_argument("--role", required=True, choices=DESK_ROLES)
    add.add_argument("--queue", action="append", default=[], help="a task queue a collector works (repeat)")
    add.add_argument("--language", choices=DESK_LANGUAGES, default="zh", help="the pages' language (default zh)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    verbs.add_parser("list", help="every desk user (never a password)")
    unlock = verbs.add_parser("unlock", help="lift a lock-out after wrong passwords (ends the user's sessions)")
    unlock.add_argument("name")


def _read_password(from_stdin: bool) -> str:
    """The new user's password: the first line of stdin, or asked twice without echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _user_cli(args: argparse.Namespace) -> int:
    url = settings().database_url
    try:
        if args.user_command == "add":
            password = _read_password(args.password_stdin)
            create_user(url, args.name, args.role, password, queues=args.queue, language=args.language)
            print(f"added {args.role} {args.name.strip()}")
            return 0
        if args.user_command == "list":
            rows = list_users(url)
            if args.json:
                print(json.dumps(rows, indent=2))
            for r in [] if args.json else rows:
                state = f"locked until {r['locked_until']}" if r["locked_until"] else "active"
                queues = f" queues={r['queues']}" if r["queues"] else ""
                print(f"{r['name']}  {r['role']:<10} {r['language']}{queues}  ({state})")
            return 0
        if unlock_user(url, args.name):
            print(f"unlocked {args.name}")
            return 0
        print(f"error: no desk user {args.name}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


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
    p.add_argument(
        "outcome", choices=["offer_plan", "waive_interest", "waive_fees", "extend_term", "resume", "refer_to_write_off"]
    )
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


def _audit_parser(sub: Any) -> None:
    p = sub.add_parser("audit", help="export a loan's audit record (JSON or CSV) and verify its hash chain")
    p.add_argument("loan_id")
    p.add_argument("--format", choices=["json", "csv"], help="default json")
    p.add_argument("--out", help="write the export to this file (default: standard output)")
    p.add_argument(
        "--retention-years",
        type=int,
        help="years the record is kept after its last entry (default: the loan's rule set)",
    )


def _audit_cli(args: argparse.Namespace) -> int:
    """`audit LOAN_ID`: the export on stdout (or --out), the verdict on stderr; exit code 3
    when the chain is broken, 2 for a loan without entries, 1 when the database is unreadable."""
    try:
        entries, problems, retain_until = export_audit(args.loan_id, retention_years=args.retention_years)
    except (OSError, SQLAlchemyError) as exc:
        print(f"error: cannot read the audit record: {exc}", file=sys.stderr)
        return 1
    if not entries:
        print(f"error: no audit entries for loan {args.loan_id}", file=sys.stderr)
        return 2
    if (args.format or "json") == "csv":
        text = to_csv(entries)
    else:
        text = (
            json.dumps(
                {
                    "loan_id": args.loan_id,
                    "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "retention_years": args.retention_years or years_between(entries[-1]["at"], retain_until),
                    "retain_until": retain_until.isoformat() if retain_until else None,
                    "chain": chain_summary(entries, problems),
                    "entries": entries,
                },
                ensure_ascii=False,
                indent=2,
            )
            + "\n"
        )
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


def _simulate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a portfolio through an experiment's strategies: report.html + CSV (docs/simulation.md)",
    )
    p.add_argument("--loans", type=_positive_int, default=10_000, help="how many synthetic loans (default 10,000)")
    p.add_argument("--days", type=_positive_int, default=180, help="days after each hand-over (default 180)")
    p.add_argument("--experiment", help="an experiment file (strategies/experiments/...); default: the strategy map")
    p.add_argument("--scenario", help="a scenario file (default strategies/scenarios/sample.toml)")
    p.add_argument("--seed", type=int, default=1, help="same seed, same figures (default 1)")
    p.add_argument("--processes", type=_positive_int, help="worker processes (default: one per core)")
    p.add_argument("--out", required=True, help="the folder to write report.html and the CSV files into")


def _simulate_cli(args: argparse.Namespace) -> int:
    """`simulate`: no Temporal, no database; prints the summary sentences and where the report is."""
    from lab.run import SCENARIO, run_simulation
    from lab.simulate import default_processes

    try:
        done = run_simulation(
            loans=args.loans,
            days=args.days,
            seed=args.seed,
            out=Path(args.out),
            experiment=Path(args.experiment) if args.experiment else None,
            scenario=Path(args.scenario) if args.scenario else SCENARIO,
            processes=args.processes or default_processes(),
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"simulated {done.loans:,} loans for {args.days} days in {done.seconds:.1f} s")
    for line in done.sentences:
        print(line)
    print(f"report: {done.report}")
    return 0


def _report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="an experiment's live results: report.html and CSV files (docs/strategy.md)")
    p.add_argument("--experiment", required=True, help="the experiment's name (the loans' experiment column)")
    p.add_argument("--from", dest="start", type=date.fromisoformat, help="loans handed over from YYYY-MM-DD (UTC)")
    p.add_argument("--to", dest="end", type=date.fromisoformat, help="... up to YYYY-MM-DD, and looked at as of then")
    p.add_argument("--costs", help="a TOML file with a [costs] table (lab/costs.py; default: its prices)")
    p.add_argument("--out", required=True, help="the folder to write report.html and the CSV files into")


def _report_cli(args: argparse.Namespace) -> int:
    """`report --experiment NAME`: the live figures from the database; prints the summary
    sentences and where the report is. Exit 2 when the experiment has no loans in the period.
    The lab is imported here: numpy and matplotlib only load for this command."""
    from db.store import make_engine
    from lab.costs import CostTable, parse_costs
    from lab.live import live_figures
    from lab.report import write_figures

    try:
        costs = CostTable()
        if args.costs:
            with open(args.costs, "rb") as f:
                costs = parse_costs(tomllib.load(f).get("costs", {}), args.costs)
        now = datetime.now(UTC)
        engine = make_engine(settings().database_url, pool_size=1, max_overflow=0)
        try:
            found = live_figures(engine, args.experiment, start=args.start, end=args.end, now=now, costs=costs)
        finally:
            engine.dispose()
    except (OSError, ValueError, tomllib.TOMLDecodeError, SQLAlchemyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, (OSError, SQLAlchemyError)) else 2
    if found is None:
        print(f"error: no loans of experiment {args.experiment!r} in the period", file=sys.stderr)
        return 2
    as_of, figures = found
    context = {
        "experiment": args.experiment,
        "period": f"loans handed over {args.start or 'from the start'} to {args.end or 'today'}, "
        f"as they stood at {as_of:%Y-%m-%d %H:%M} UTC",
        "costs": args.costs or "the default price list (lab/costs.py)",
        "source": "the production database (live loans)",
    }
    path = write_figures(figures, Path(args.out), title=f"Experiment {args.experiment}: live results", context=context)
    for line in [c.sentence for c in figures.comparisons if c.segment == "all"] + figures.warnings:
        print(line)
    print(f"report: {path}")
    return 0


def _doctor_parsers(sub: Any) -> None:
    """`doctor` and `reset` (ops.doctor). They also take --json after the command."""
    as_json = {"action": "store_true", "default": argparse.SUPPRESS, "help": "print JSON"}
    p = sub.add_parser("doctor", help="list stuck loans: running, but their workflow task keeps failing")
    p.add_argument("--limit", type=_positive_int, default=100, help="list at most N stuck loans (default 100)")
    p.add_argument("--json", **as_json)
    p = sub.add_parser(
        "reset", help="reset a stuck loan to its last good workflow task (goes on under the current code)"
    )
    p.add_argument("loan_id")
    p.add_argument(
        "--to-event",
        type=_positive_int,
        help="reset to this workflow task event id instead "
        "(default: the latest WORKFLOW_TASK_COMPLETED the current code replays)",
    )
    p.add_argument("--reason", default="", help="why (recorded in the history with the failure)")
    p.add_argument("--dry-run", action="store_true", help="say what would be done and change nothing")
    p.add_argument("--force", action="store_true", help="reset a loan that is not stuck")
    p.add_argument("--json", **as_json)


def _webhook_parsers(sub: Any) -> None:
    """`webhook add|list|remove|deliveries` (api.webhooks): the database only, like `audit`."""
    as_json = {"action": "store_true", "default": argparse.SUPPRESS, "help": "print JSON"}
    hook = sub.add_parser("webhook", help="webhook subscribers and the delivery log (docs/webhooks.md)")
    actions = hook.add_subparsers(dest="webhook_command", required=True)
    p = actions.add_parser("add", help="send events to a URL (prints the secret once)")
    p.add_argument("url")
    p.add_argument("--secret", help="the signing secret (default: a new random one, printed once)")
    p.add_argument("--events", default="*", help="comma-separated event types, or * for all (default)")
    p.add_argument("--json", **as_json)
    p = actions.add_parser("list", help="subscribers (secrets are not shown)")
    p.add_argument("--json", **as_json)
    p = actions.add_parser("remove", help="stop sending to a subscriber (its pending deliveries become dead)")
    p.add_argument("subscriber_id")
    p.add_argument("--json", **as_json)
    p = actions.add_parser("deliveries", help="the delivery log, newest first, with every attempt")
    p.add_argument("--loan")
    p.add_argument("--subscriber")
    p.add_argument("--event")
    p.add_argument("--limit", type=_positive_int, default=20)
    p.add_argument("--json", **as_json)


def _webhook_cli(args: argparse.Namespace) -> int:
    """`webhook ...` against DATABASE_URL; exit code 2 for a refused request (bad URL or event
    type, a URL already subscribed, an unknown subscriber), 1 when the database is unreadable."""
    from api import webhooks
    from db.store import make_engine
    from infra.settings import settings

    engine = make_engine(settings().database_url, pool_size=1, max_overflow=0)
    try:
        result: Any
        if args.webhook_command == "add":
            result = webhooks.add_subscriber(engine, args.url, args.secret, args.events)
        elif args.webhook_command == "list":
            result = webhooks.list_subscribers(engine)
        elif args.webhook_command == "remove":
            if not webhooks.remove_subscriber(engine, args.subscriber_id):
                print(f"error: no active subscriber {args.subscriber_id}", file=sys.stderr)
                return 2
            result = {"removed": args.subscriber_id}
        else:
            result = webhooks.deliveries(
                engine, subscriber_id=args.subscriber, event_id=args.event, loan_id=args.loan, limit=args.limit
            )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, SQLAlchemyError) as exc:
        print(f"error: cannot use the database: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    else:
        print(_format_webhooks(args.webhook_command, result))
    return 0


def _format_webhooks(command: str, result: Any) -> str:
    if command == "add":
        return (
            f"subscriber {result['id']}: {result['url']} for {', '.join(result['events'])}\n"
            f"secret (shown once; the receiver verifies X-Signature with it): {result['secret']}"
        )
    if command == "remove":
        return f"removed {result['removed']}"
    if command == "list":
        lines = [
            f"{s['id']}  {'active ' if s['active'] else 'removed'}  {s['url']}  {','.join(s['events'])}" for s in result
        ]
        return "\n".join([*lines, f"{len(result)} subscriber(s)"])
    lines = []
    for d in result:
        lines.append(
            f"{d['id']:>6} {d['status']:<9} {d['event_type']:<20} {d['loan_id']} #{d['seq']} -> {d['subscriber_id']}"
            + (f"  next {d['next_attempt_at']}" if d["next_attempt_at"] else "")
        )
        lines += [
            f"         attempt {a['attempt']} at {a['at']}: {a['status'] or '-'} {a['error']} ({a['duration_ms']} ms)"
            for a in d["attempts"]
        ]
    return "\n".join([*lines, f"{len(result)} delivery(ies)"])


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
    return await doctor.reset_loan(
        client, args.loan_id, to_event=args.to_event, reason=args.reason, dry_run=args.dry_run, force=args.force
    )


def _plan_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--instalments", type=int, required=required)
    p.add_argument("--first-due", type=date.fromisoformat, required=required)
    p.add_argument("--frequency", choices=["weekly", "biweekly", "monthly"], default="monthly")
    p.add_argument("--down-payment", default="0")


def _plan_from(args: argparse.Namespace) -> PlanProposal | None:
    if args.instalments is None:
        return None
    return PlanProposal(
        instalments=args.instalments,
        first_due=args.first_due,
        frequency=args.frequency,
        down_payment=_amount(args.down_payment),
        made_by=args.by,
    )


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
        return await promise_to_pay(
            client, loan, PromiseRequest(amount=_amount(args.amount), date=args.date, made_by=by)
        )
    if args.command == "plan":
        plan = _plan_from(args)
        assert plan is not None, "the plan command requires --instalments"
        return await propose_plan(client, loan, plan)
    if args.command == "settle":
        return await offer_settlement(
            client, loan, SettlementOffer(amount=_amount(args.amount), deadline=args.deadline, made_by=by)
        )
    if args.command == "hardship":
        return await report_hardship(
            client, loan, HardshipReport(reason=args.reason, evidence_ref=args.evidence, reported_by=by)
        )
    if args.command == "review":
        return await review_hardship(
            client,
            loan,
            HardshipDecision(outcome=args.outcome, plan=_plan_from(args), extend_days=args.extend_days, decided_by=by),
        )
    if args.command == "dispute":
        return await raise_dispute(client, loan, DisputeRequest(reason=args.reason, raised_by=by))
    if args.command == "resolve":
        return await resolve_dispute(
            client, loan, DisputeResolution(upheld=args.verdict == "upheld", note=args.note, resolved_by=by)
        )
    if args.command == "opt-out":
        return await opt_out(client, loan, OptOutRequest(channel=args.channel, requested_by=by))
    return await stop_collection(
        client, loan, StopRequest(reason=args.reason, route=args.route, evidence_ref=args.evidence, requested_by=by)
    )


async def _run_cli(args: argparse.Namespace) -> Any:
    client = await connect(args.address)
    if args.command == "start":
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        loan = OverdueLoan.model_validate_json(text)  # the HTTP API's body: a `policy` beside the loan
        policy = args.policy or str(json.loads(text).get("policy") or AUTO)
        return {"workflow_id": await start_collection(client, loan, policy)}
    decision = await _negotiate(client, args)
    if decision is not None:
        return decision
    if args.command == "pay":
        currency = args.currency or (await get_status(client, args.loan_id)).currency
        amount = _amount(args.amount)
        paid_at = datetime.fromisoformat(args.paid_at) if args.paid_at else datetime.now(UTC)
        payment = Payment(
            payment_id=args.payment_id or f"cli-{uuid.uuid4()}",
            amount=amount,
            currency=currency,
            paid_at=paid_at,
            source="cli",
        )
        return await register_payment(client, args.loan_id, payment)
    if args.command == "status":
        return await get_status(client, args.loan_id)
    if args.command == "list":
        return await list_loans(client, args.status, stage=args.stage, policy=args.policy, agency=args.agency)
    if args.command == "stats":
        return {"stats": await portfolio_stats(client, policy=args.policy)}
    if args.command == "outcome":
        report = TaskReport(
            task_id=args.task_id, outcome=args.outcome, note=args.note, recording_ref=args.recording, reported_by="cli"
        )
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
        return {"as_of": scan_day(args.as_of).isoformat(), **totals.model_dump()}
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
        print(
            f"{'accepted' if result.accepted else 'rejected'}: {result.reason}"
            + (f" [{result.ref}]" if result.ref else "")
        )
    elif isinstance(result, list):
        for row in result:
            print(
                f"{row['loan_id']:<20} {row['status']:<10} {row['stage']:<12} {row['dpd_band']:<8} "
                f"{row['outstanding']:>12} {row['currency']:<4} {row['agency'] or '-':<16} started {row['started']}"
            )
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
        (
            f"outstanding {o.total} {st.currency}: principal {o.principal}, interest {o.interest}, "
            f"fees {o.fees}, penalties {o.penalties}; paid so far {st.paid_total}"
        ),
        f"next: {st.next_action or '-'} at "
        f"{st.next_action_at.isoformat(timespec='minutes') if st.next_action_at else '-'}"
        + (f"; paused: {st.paused_reason}" if st.paused_reason else ""),
    ]
    if st.arrangement:
        a = st.arrangement
        lines.append(f"arrangement: {a.kind} {a.ref}: next {a.next_due_amount} due {a.next_due_date} ({a.status})")
    c = st.counts
    if c != type(c)():
        lines.append(
            f"promises kept/broken {c.promises_kept}/{c.promises_broken}; instalments kept/missed "
            f"{c.instalments_kept}/{c.instalments_missed}; plans broken {c.plans_broken}; "
            f"settlements lapsed {c.settlements_lapsed}"
        )
    lines += [f"hold: {h.kind} since {h.started_at:%Y-%m-%d} ({h.reason})" for h in st.holds]
    if st.stop:
        lines.append(f"stopped: {st.stop.reason}, route {st.stop.route}")
    lines += [
        f"open task {t.task_id} ({t.kind}, queue {t.queue}) outcome due {t.deadline:%Y-%m-%d %H:%M}"
        for t in st.open_tasks
    ]
    if st.placement:
        lines.append(f"with agency {st.placement.agency} until {st.placement.recall_at:%Y-%m-%d}")
    if st.case:
        lines.append(f"court case {st.case.case_id}: {st.case.last_event}")
    lines.append("timeline:")
    lines += [f"  {e.at:%Y-%m-%d %H:%M} {e.action:<22} {e.channel:<7} {e.outcome:<10} {e.detail}" for e in st.timeline]
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
    lines.append(
        f"{len(report.stuck)} stuck loan(s) among {report.examined} running"
        + ("; `starter.py reset LOAN_ID --dry-run` shows what a reset would do" if report.stuck else "")
    )
    return "\n".join(lines)


def _format_reset(r: Any) -> str:
    how = "the last workflow task the current code replays" if r.chosen_by == "replay" else "as given"
    point = (
        f"event {r.reset_event_id} ({how}); the {r.events_discarded} event(s) after it are redone by the new run, "
        "signals and updates among them reapplied"
    )
    head = (
        f"dry run: would reset loan {r.loan_id} (run {r.run_id}) to {point}"
        if r.dry_run
        else f"reset loan {r.loan_id}: run {r.run_id} -> new run {r.new_run_id}, from {point}"
    )
    return f"{head}\nreason: {r.reason}"


def _format_receipt(r: PaymentReceipt) -> str:
    a = r.allocation
    return (
        f"payment {r.payment_id}: {r.amount} {r.currency} -> penalties {a.penalties}, fees {a.fees}, "
        f"interest {a.interest}, principal {a.principal}"
        + (f", unapplied {a.unapplied}" if a.unapplied else "")
        + f"\noutstanding {r.outstanding.total} {r.currency}; stage {r.stage}"
        + ("; loan closed" if r.closed else "")
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "audit":
        return _audit_cli(args)  # the database only: no Temporal connection
    if args.command == "token":
        return _token_cli(args)
    if args.command == "user":
        return _user_cli(args)  # the database only too
    if args.command == "experiment":
        return _experiment_cli(args)  # the database only too
    if args.command == "webhook":
        return _webhook_cli(args)  # the database only too
    if args.command == "report":
        return _report_cli(args)  # the database only too
    if args.command == "simulate":
        return _simulate_cli(args)  # neither Temporal nor the database
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
    exit_process(main())
