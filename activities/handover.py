"""Handovers to outside parties: agency placement and recall, court filing."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio import activity

from activities.rendering import Renderer
from db.store import append_audit, audit_row, hold_write_lock, in_transaction, write_once
from db.tables import CaseRow, PlacementRow
from models.requests import CaseRequest, PlacementRequest, RecallRequest, Recorded


class HandoverActivities:
    def __init__(self, engine: Engine, renderer: Renderer) -> None:
        self._engine = engine
        self._renderer = renderer

    @activity.defn
    def place_with_agency(self, req: PlacementRequest) -> Recorded:
        """Record the placement (the agency's feed reads this table) with its handover note."""
        note = self.handover_note(req)
        return in_transaction(self._engine, lambda session: place_with_agency(session, req, note))

    def handover_note(self, req: PlacementRequest) -> str:
        return self._renderer.render(req.template, "document", req.language, req.context)[1]

    @activity.defn
    def recall_from_agency(self, req: RecallRequest) -> Recorded:
        """Take the account back; a second recall changes nothing."""
        return in_transaction(self._engine, lambda session: recall_from_agency(session, req))

    @activity.defn
    def file_case(self, req: CaseRequest) -> Recorded:
        """File the court case with its claim document."""
        document = self.claim(req)
        return in_transaction(self._engine, lambda session: file_case(session, req, document))

    def claim(self, req: CaseRequest) -> str:
        return self._renderer.render(req.template, "document", req.language, req.context)[1]


def place_with_agency(session: Session, req: PlacementRequest, note: str) -> Recorded:
    row = PlacementRow(
        placement_id=req.key,
        loan_id=req.loan_id,
        agency=req.agency,
        amount=req.balance.total,
        currency=req.currency,
        placed_at=req.at,
        recall_at=req.recall_at,
    )
    audit = audit_row(
        f"{req.key}#placed",
        req.loan_id,
        "agency_placed",
        "system",
        req.context.get("stage", ""),
        req.at,
        agency=req.agency,
        recall_at=req.recall_at.isoformat(),
        note=note,
    )
    row, duplicate = write_once(session, row, "placement_id", [audit])
    return Recorded(ref=row.placement_id, duplicate=duplicate)


def recall_from_agency(session: Session, req: RecallRequest) -> Recorded:
    """The row is locked before it is read, so a concurrent second recall waits and then finds
    it recalled."""
    hold_write_lock(session)
    row = session.exec(
        select(PlacementRow).where(PlacementRow.placement_id == req.placement_id).with_for_update()
    ).first()
    if row is None or row.recalled_at is not None:
        return Recorded(ref=req.placement_id, duplicate=True)
    row.recalled_at, row.recall_reason = req.at, req.reason
    session.add(row)
    append_audit(
        session,
        audit_row(
            f"{req.placement_id}#recalled",
            req.loan_id,
            "agency_recalled",
            "system",
            "",
            req.at,
            agency=row.agency,
            reason=req.reason,
        ),
    )
    return Recorded(ref=req.placement_id)


def file_case(session: Session, req: CaseRequest, document: str) -> Recorded:
    row = CaseRow(
        case_id=req.key,
        loan_id=req.loan_id,
        amount=req.balance.total,
        currency=req.currency,
        document=document,
        filed_at=req.at,
    )
    audit = audit_row(
        f"{req.key}#filed",
        req.loan_id,
        "case_filed",
        "system",
        req.context.get("stage", ""),
        req.at,
        amount=req.balance.total,
        currency=req.currency,
    )
    row, duplicate = write_once(session, row, "case_id", [audit])
    return Recorded(ref=row.case_id, duplicate=duplicate)
