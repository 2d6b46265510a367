"""The guard activity: one contact budget per person, decided inside a database transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio import activity

from db.contacts import ContactRow, lock_person
from db.store import append_audit, audit_row, hold_write_lock, in_transaction
from db.tables import AuditRow
from models.clock import virtual_now
from models.conduct import ContactRequest, GuardDecision, PastContact, decision_key, history_horizon, judge
from models.requests import GuardRequest, Recorded


def _effective(req: GuardRequest) -> ContactRequest:
    """The contact as the guard judges it: at the later of its business time and the policy
    clock's reading of the real time (`GuardRequest.clock`), else at its business time."""
    c = req.contact
    if req.clock is None:
        return c
    real = virtual_now(datetime.now(UTC), req.clock)
    return c if real <= c.at else c.model_copy(update={"at": real})


def _recorded(row: AuditRow) -> GuardDecision:
    """The decision an audit entry recorded (for a retried request: the same answer again)."""
    detail = json.loads(row.detail)
    return GuardDecision(
        verdict=row.action.removeprefix("guard_"),
        rule=row.rule_id,
        at=datetime.fromisoformat(detail["until"]),
        reason=detail["reason"],
        decided_at=row.at,
    )


class GuardActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    def request_contact(self, req: GuardRequest) -> GuardDecision:
        """Decide a contact against the person's whole history and, if allowed, take the slot.

        A retried request whose slot was already taken is answered `allowed` again without a
        second row; a retried request that was deferred or refused gets the recorded decision
        back (the worker may have died after the commit, before reporting it). Every decision
        goes to the audit record, once, with the rule that decided it.
        A transaction the database turned back (deadlock, busy SQLite, a lost race) runs again.
        """
        return self.decide_contact(req)

    def decide_contact(self, req: GuardRequest) -> GuardDecision:
        """`request_contact` as a plain call, in a transaction of its own."""
        return in_transaction(self._engine, lambda session: decide_contact(session, req))

    @activity.defn
    def record_conversation(self, key: str) -> Recorded:
        """A call reached the borrower: it now counts as a conversation for the caps."""
        return in_transaction(self._engine, lambda session: record_conversation(session, key))


def decide_contact(session: Session, req: GuardRequest) -> GuardDecision:
    """The guard's decision inside the caller's transaction (a batch's confirmation asks it
    together with the message's other writes). The person's lock is held until that
    transaction ends."""
    c, rules = _effective(req), req.rules.ruleset
    lock_person(session, c.borrower_id)  # before reading the person's history
    taken = session.exec(select(ContactRow).where(ContactRow.key == c.key)).first()
    if taken is not None:
        return GuardDecision(
            verdict="allowed", rule="GEN-ALLOWED", at=taken.at, reason="slot already taken", decided_at=taken.at
        )
    audit_key = decision_key(req.contact)
    earlier = session.exec(select(AuditRow).where(AuditRow.key == audit_key)).first()
    if earlier is not None:
        return _recorded(earlier)
    rows = session.exec(
        select(ContactRow).where(ContactRow.borrower_id == c.borrower_id, ContactRow.at > c.at - history_horizon(rules))
    ).all()
    history = [PastContact(channel=r.channel, at=r.at, connected=r.connected) for r in rows]
    decision = judge(c, history, rules, req.situation, frozenset(req.rules.holidays))
    if decision.verdict == "allowed":
        session.add(
            ContactRow(
                key=c.key, borrower_id=c.borrower_id, loan_id=c.loan_id, channel=c.channel, purpose=c.purpose, at=c.at
            )
        )
    append_audit(
        session,
        audit_row(
            audit_key,
            c.loan_id,
            f"guard_{decision.verdict}",
            "guard",
            "",
            c.at,
            rule_id=decision.rule,
            channel=c.channel,
            purpose=c.purpose,
            until=decision.at.isoformat(),
            reason=decision.reason,
            ruleset=rules.name,
        ),
    )
    return decision


def record_conversation(session: Session, key: str) -> Recorded:
    hold_write_lock(session)
    row = session.exec(select(ContactRow).where(ContactRow.key == key).with_for_update()).first()
    if row is None or row.connected:
        return Recorded(ref=key, duplicate=True)
    row.connected = True
    session.add(row)
    return Recorded(ref=key)
