"""Records: the policy a loan starts with, the loan row, and audit entries for decisions and
reports that have no other side effect."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.linter import lint_folder
from db.store import audit_row, in_transaction, write_once
from db.tables import BorrowerRow, LoanRow, utcnow
from infra.loaders import load_holidays, load_policy, load_ruleset
from models.policy import Conduct, Policy, PolicyError, template_names
from models.requests import AuditEvent, ConductRules, LoanRegistration, Recorded


class RecordActivities:
    def __init__(self, engine: Engine, policies_dir: Path, rulesets_dir: Path, templates_dir: Path) -> None:
        self._engine = engine
        self._policies_dir = policies_dir
        self._rulesets_dir = rulesets_dir
        self._templates_dir = templates_dir
        self._checked: set[tuple[str, str]] = set()
        self._rules: dict[str, ConductRules] = {}
        self._lint_lock = threading.Lock()

    @activity.defn
    def load_policy(self, name: str) -> Policy:
        """Read and validate the named policy, its rule set and, under that rule set, every
        template it may send; a broken policy or an uncivil template fails the start."""
        try:
            policy = load_policy(name, self._policies_dir)
            self._check_conduct(policy)
            return policy
        except PolicyError as exc:
            raise ApplicationError(str(exc), type="PolicyError", non_retryable=True) from exc

    def _check_conduct(self, policy: Policy) -> None:
        """Lint the policy's templates once per policy version in this worker."""
        with self._lint_lock:  # twenty loans starting together lint once, not twenty times
            if (policy.name, policy.version) not in self._checked:
                self._lint(policy)
                self._checked.add((policy.name, policy.version))

    def _lint(self, policy: Policy) -> None:
        try:
            ruleset = load_ruleset(policy.conduct.ruleset, self._rulesets_dir, policy.conduct.overrides)
        except ValueError as exc:
            raise PolicyError(f"policy {policy.name}: field 'conduct.ruleset': {exc}") from exc
        problems = lint_folder(
            self._templates_dir, ruleset.opt_out_required, self._rulesets_dir / "wordlists", template_names(policy)
        )
        if problems:
            listed = "; ".join(f"{name}: {', '.join(found)}" for name, found in sorted(problems.items()))
            raise PolicyError(f"policy {policy.name}: templates refused under rule set {ruleset.name}: {listed}")

    @activity.defn
    def load_conduct_rules(self, conduct: Conduct) -> ConductRules:
        """The rule set a policy names, with its overrides and holiday calendar (read once per
        worker and rule set: files change with a deploy, and a loan pins what it started with)."""
        cache_key = conduct.model_dump_json()
        if cache_key not in self._rules:
            try:
                ruleset = load_ruleset(conduct.ruleset, self._rulesets_dir, conduct.overrides)
                holidays = load_holidays(ruleset.hours.holidays, self._rulesets_dir)
            except (ValueError, OSError) as exc:
                raise ApplicationError(str(exc), type="RuleSetError", non_retryable=True) from exc
            self._rules[cache_key] = ConductRules(ruleset=ruleset, holidays=sorted(holidays))
        return self._rules[cache_key]

    @activity.defn
    def register_loan(self, req: LoanRegistration) -> Recorded:
        """Insert the borrower and loan rows if new, link the loan to its workflow and record the
        start, in one transaction (a loan's first write; two loans of one person starting
        together race for the borrower row, and the loser runs again and finds it)."""
        return in_transaction(self._engine, lambda session: register_loan(session, req))

    @activity.defn
    def record_event(self, event: AuditEvent) -> Recorded:
        """Append an audit entry (once per key) and keep the loan row's stage current."""
        return in_transaction(self._engine, lambda session: record_event(session, event))


def register_loan(session: Session, req: LoanRegistration) -> Recorded:
    loan, b = req.loan, req.loan.borrower
    if session.get(BorrowerRow, b.borrower_id) is None:
        session.add(BorrowerRow(**b.model_dump(include=set(BorrowerRow.model_fields))))
        session.flush()  # a racing start of another loan of the person shows here: the transaction runs again
    row = session.get(LoanRow, loan.loan_id)
    if row is None:
        row = LoanRow(
            loan_id=loan.loan_id,
            borrower_id=b.borrower_id,
            currency=loan.currency,
            principal=loan.principal,
            interest=loan.interest,
            fees=loan.fees,
            penalties=loan.penalties,
            due_date=loan.due_date,
            product=loan.product,
            stage=str(req.stage),  # so the audit entry below needs no second write for it
        )
    row.policy, row.workflow_id, row.updated_at = req.policy, req.workflow_id, utcnow()
    if req.strategy is not None:  # the screening and arm, for reports that read the database
        row.segment, row.score = req.strategy.segment, req.strategy.screening.score
        row.experiment, row.arm = req.strategy.assignment.experiment or None, req.strategy.arm
    session.add(row)
    return record_event(
        session,
        AuditEvent(
            key=f"{loan.loan_id}/collection-started/{req.workflow_id}",
            loan_id=loan.loan_id,
            action="collection_started",
            actor="platform",
            stage=req.stage,
            at=req.at,
            detail={"policy": req.policy, "policy_version": req.policy_version},
        ),
    )


def record_event(session: Session, event: AuditEvent) -> Recorded:
    """`RecordActivities.record_event` inside the caller's transaction: the entry and the loan
    row's stage in one commit."""
    row = audit_row(event.key, event.loan_id, event.action, event.actor, event.stage, event.at, **event.detail)
    row, duplicate = write_once(session, row, "key")
    loan = session.get(LoanRow, event.loan_id)
    if loan is not None and loan.stage != event.stage:
        loan.stage, loan.updated_at = event.stage, utcnow()
        session.add(loan)
    return Recorded(ref=str(row.id), duplicate=duplicate)
