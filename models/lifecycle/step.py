"""One decision in progress: the state it changes, the time it is taken at, who caused it, and
the commands it asks for. Every rule module writes through a `Step`, so the timeline, the audit
record and the commands always carry the same time and stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from models.effects import Audit, Command
from models.events import TimelineEntry
from models.loan import Stage
from models.negotiation import days_between
from models.requests import AuditEvent
from models.schedule import PlannedAction, build_plan, days_past_due, local_date, next_contact_moment, stage_for_dpd
from models.status import CollectionState


class Rejected(ValueError):
    """A request the loan refuses; nothing changed. `kind` names the refusal for callers
    (`PaymentRejected`, `ArrangementRejected`, `RequestRejected`, `CollectionStarting`)."""

    def __init__(self, message: str, kind: str = "RequestRejected") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Step:
    s: CollectionState
    now: datetime
    actor: str = "workflow"
    commands: list[Command] = field(default_factory=list)

    # ------------------------------------------------------------ facts

    @property
    def loan_id(self) -> str:
        return self.s.loan.loan_id

    @property
    def tz(self) -> str:
        return self.s.loan.borrower.timezone

    @property
    def plan(self) -> list[PlannedAction]:
        return plan_of(self.s)

    def today(self) -> date:
        """Today on the borrower's calendar."""
        return local_date(self.now, self.tz)

    def dpd(self) -> int:
        return dpd(self.s, self.now)

    def stage(self) -> Stage:
        return stage(self.s, self.now)

    def contact_time(self, planned: datetime) -> datetime:
        """When a contact planned for `planned` may happen: not before now, and inside the
        borrower's contact window (a late timer at 23:00 waits for the morning)."""
        return contact_time(self.s, planned)

    # ------------------------------------------------------------ writing

    def emit(self, command: Command) -> None:
        self.commands.append(command)

    def note(self, action: str, *, channel: str = "", outcome: str = "", key: str = "", detail: str = "") -> None:
        self.s.timeline.append(
            TimelineEntry(
                at=self.now,
                action=action,
                channel=channel,
                outcome=outcome,
                key=key,
                detail=detail,
            )
        )

    def record(self, key: str, action: str, actor: str = "workflow", **detail: str) -> None:
        """An audit entry (`<loan id>/<key>`, once), with the stage as of now."""
        self.emit(
            Audit(
                req=AuditEvent(
                    key=f"{self.loan_id}/{key}",
                    loan_id=self.loan_id,
                    action=action,
                    actor=actor,
                    stage=self.stage(),
                    at=self.now,
                    detail=detail,
                )
            )
        )


def plan_of(s: CollectionState) -> list[PlannedAction]:
    """The loan's plan (`build_plan`), built once per state: it depends only on the pinned
    policy and the hand-over snapshot, and building it on every decision was half of what a
    decision cost (the simulator runs millions). Read-only: callers never change the list."""
    private = s.__pydantic_private__  # the private attribute's store, read without pydantic's __getattr__
    assert private is not None
    cached = private.get("_plan")
    if cached is None or cached[0] is not s.policy or cached[1] is not s.loan:
        cached = (s.policy, s.loan, build_plan(s.policy, s.loan))
        private["_plan"] = cached
    return cached[2]


def clock_of(s: CollectionState) -> datetime:
    """The loan's business time: the latest event's (the start before any)."""
    return s.clock or s.started_at


def dpd(s: CollectionState, now: datetime) -> int:
    """Days past due for the ladder: paused days, the ongoing pause included, do not count;
    frozen at the close."""
    at = s.closed_at or now
    tz = s.loan.borrower.timezone
    ongoing = max(0, days_between(s.pause_started_at, at, tz)) if s.pause_started_at else 0
    return days_past_due(at, s.loan.due_date, tz, s.paused_days + ongoing)


def stage(s: CollectionState, now: datetime) -> Stage:
    if s.closed_as is not None:
        return s.closed_as
    if s.charged_off_at is not None:
        return Stage.written_off
    return stage_for_dpd(dpd(s, now), s.policy)


def contact_time(s: CollectionState, planned: datetime) -> datetime:
    """`planned`, or the loan's business time if later, moved into the contact window."""
    return next_contact_moment(max(planned, clock_of(s)), s.policy, s.loan.borrower.timezone)
