"""Ledger activities: late fees, payments with their allocation, charge-off."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import Session, SQLModel
from temporalio import activity

from db.store import audit_row, in_transaction, write_once
from db.tables import LedgerEntry
from models.loan import COMPONENTS
from models.requests import ChargeOffRequest, FeeRequest, PaymentRecord, Recorded, WaiverRequest


class LedgerActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    def post_fee(self, req: FeeRequest) -> Recorded:
        """Post the late fee of one period; the key (loan, period) makes it once per period."""
        return in_transaction(self._engine, lambda session: post_fee(session, req))

    @activity.defn
    def record_payment(self, req: PaymentRecord) -> Recorded:
        """Write the payment and one allocation row per component, in one transaction."""
        return in_transaction(self._engine, lambda session: record_payment(session, req))

    @activity.defn
    def charge_off(self, req: ChargeOffRequest) -> Recorded:
        """Charge off the balance left at the write-off day (recoveries are still accepted)."""
        return in_transaction(self._engine, lambda session: charge_off(session, req))

    @activity.defn
    def waive(self, req: WaiverRequest) -> Recorded:
        """Write amounts off, one ledger row per component, in one transaction."""
        return in_transaction(self._engine, lambda session: waive(session, req))


# Each write below runs inside the caller's transaction (an activity's own, or a batch's:
# activities/effects.py), once per business key.


def post_fee(session: Session, req: FeeRequest) -> Recorded:
    entry = LedgerEntry(
        key=req.key,
        loan_id=req.loan_id,
        kind="fee",
        component="penalties",
        amount=req.amount,
        currency=req.currency,
        at=req.at,
        reference=f"period {req.period}",
    )
    audit = audit_row(
        f"{req.key}#audit",
        req.loan_id,
        "fee_posted",
        "system",
        "",
        req.at,
        period=req.period,
        amount=req.amount,
        currency=req.currency,
    )
    row, duplicate = write_once(session, entry, "key", [audit])
    return Recorded(ref=str(row.id), duplicate=duplicate)


def record_payment(session: Session, req: PaymentRecord) -> Recorded:
    pay = req.payment
    entry = LedgerEntry(
        key=req.key,
        loan_id=req.loan_id,
        kind="payment",
        amount=pay.amount,
        currency=pay.currency,
        at=pay.paid_at,
        reference=pay.payment_id,
    )
    parts: list[tuple[str, str, Decimal]] = [("allocation", name, getattr(req.allocation, name)) for name in COMPONENTS]
    parts.append(("overpayment", "", req.allocation.unapplied))
    extra: list[SQLModel] = [
        LedgerEntry(
            key=f"{req.key}/{kind}/{component}",
            loan_id=req.loan_id,
            kind=kind,
            component=component,
            amount=amount,
            currency=pay.currency,
            at=pay.paid_at,
            reference=pay.payment_id,
        )
        for kind, component, amount in parts
        if amount > 0
    ]
    extra.append(
        audit_row(
            f"{req.key}#audit",
            req.loan_id,
            "payment_applied",
            pay.source,
            "",
            pay.paid_at,
            payment_id=pay.payment_id,
            amount=pay.amount,
            currency=pay.currency,
            balance_after=req.balance_after.total,
        )
    )
    row, duplicate = write_once(session, entry, "key", extra)
    return Recorded(ref=str(row.id), duplicate=duplicate)


def charge_off(session: Session, req: ChargeOffRequest) -> Recorded:
    entry = LedgerEntry(
        key=req.key,
        loan_id=req.loan_id,
        kind="charge_off",
        amount=req.balance.total,
        currency=req.currency,
        at=req.at,
        reference="write-off",
    )
    audit = audit_row(
        f"{req.key}#audit",
        req.loan_id,
        "charged_off",
        "system",
        "written_off",
        req.at,
        amount=req.balance.total,
        currency=req.currency,
    )
    row, duplicate = write_once(session, entry, "key", [audit])
    return Recorded(ref=str(row.id), duplicate=duplicate)


def waive(session: Session, req: WaiverRequest) -> Recorded:
    rows = [
        LedgerEntry(
            key=f"{req.key}/{name}",
            loan_id=req.loan_id,
            kind=req.kind,
            component=name,
            amount=getattr(req.amounts, name),
            currency=req.currency,
            at=req.at,
            reference=req.reason,
        )
        for name in COMPONENTS
        if getattr(req.amounts, name) > 0
    ]
    audit = audit_row(
        f"{req.key}#audit",
        req.loan_id,
        req.kind,
        "system",
        "",
        req.at,
        amount=req.amounts.total,
        currency=req.currency,
        reason=req.reason,
    )
    if not rows:
        stored, duplicate = write_once(session, audit, "key")
        return Recorded(ref=str(stored.id), duplicate=duplicate)
    first, duplicate = write_once(session, rows[0], "key", [*rows[1:], audit])
    return Recorded(ref=str(first.id), duplicate=duplicate)
