"""Tasks for people: phone calls and field visits. The workflow waits for their outcome."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio import activity

from activities.rendering import Renderer
from db.store import append_audit, audit_row, hold_write_lock, in_transaction, write_once
from db.tables import AuditRow, TaskRow
from models.requests import Recorded, TaskClosure, TaskRequest


class TaskActivities:
    def __init__(self, engine: Engine, renderer: Renderer) -> None:
        self._engine = engine
        self._renderer = renderer

    @activity.defn
    def create_task(self, req: TaskRequest) -> Recorded:
        """Open a task in the people's queue with a brief rendered from the step's template."""
        brief = self.brief(req)
        return in_transaction(self._engine, lambda session: create_task(session, req, brief))

    def brief(self, req: TaskRequest) -> str:
        """The task's brief (a template that does not render fails for good, before any write)."""
        return self._renderer.render(req.template, "task", req.language, req.context)[1]

    @activity.defn
    def close_task(self, req: TaskClosure) -> Recorded:
        """Close a task with its outcome; closing a closed task changes nothing."""
        return in_transaction(self._engine, lambda session: close_task(session, req))


def create_task(session: Session, req: TaskRequest, brief: str) -> Recorded:
    """Insert the task once (its key is its id), with its audit entry, in the caller's transaction."""
    row = TaskRow(
        task_id=req.key,
        loan_id=req.loan_id,
        workflow_id=req.workflow_id,
        kind=req.kind,
        queue=req.queue,
        template=req.template,
        attempt=req.attempt,
        brief=brief,
        due_by=req.due_by,
        created_at=req.at,
    )
    audit = audit_row(
        f"{req.key}#created",
        req.loan_id,
        f"{req.kind}_task_created",
        "system",
        req.context.get("stage", ""),
        req.at,
        queue=req.queue,
        attempt=req.attempt,
    )
    row, duplicate = write_once(session, row, "task_id", [audit])
    return Recorded(ref=row.task_id, duplicate=duplicate)


def close_task(session: Session, req: TaskClosure) -> Recorded:
    """Close a task in the caller's transaction. The row is locked before it is read, so a
    second closing attempt at the same moment waits and then finds it closed (instead of
    overwriting the outcome and failing on the audit key)."""
    hold_write_lock(session)
    row = session.exec(select(TaskRow).where(TaskRow.task_id == req.task_id).with_for_update()).first()
    if row is None or row.status == "closed":
        return Recorded(ref=req.task_id, duplicate=True)
    row.status, row.outcome, row.note = "closed", req.outcome, req.note
    row.recording_ref, row.closed_at, row.closed_by = req.recording_ref, req.at, req.closed_by
    session.add(row)
    key = f"{req.task_id}#closed"
    if session.exec(select(AuditRow).where(AuditRow.key == key)).first() is None:
        append_audit(
            session,
            audit_row(
                key,
                req.loan_id,
                f"{row.kind}_task_closed",
                req.closed_by,
                "",
                req.at,
                evidence_ref=req.recording_ref,
                outcome=req.outcome,
                note=req.note,
            ),
        )
    return Recorded(ref=req.task_id)
