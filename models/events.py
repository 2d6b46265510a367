"""What people and partners report back into a loan, and the timeline it keeps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TaskOutcome(StrEnum):
    """Result of a phone call or a field visit."""

    answered = "answered"
    no_answer = "no_answer"
    wrong_number = "wrong_number"
    promised = "promised"
    refused = "refused"

    @property
    def reached(self) -> bool:
        """Whether the borrower was actually reached (no retry needed)."""
        return self in (TaskOutcome.answered, TaskOutcome.promised, TaskOutcome.refused)


class TaskReport(BaseModel):
    """A collector's or field agent's report on a task the loan created."""

    model_config = ConfigDict(frozen=True)

    task_id: str = Field(min_length=1)
    outcome: TaskOutcome
    note: str = ""
    recording_ref: str = ""
    reported_by: str = "agent"


class AgencyReport(BaseModel):
    """A progress report from the agency holding the account."""

    model_config = ConfigDict(frozen=True)

    placement_id: str = Field(min_length=1)
    note: str = Field(min_length=1)
    contacted: bool = False
    reported_by: str = "agency"


class CourtReport(BaseModel):
    """News of the court case: a hearing, a judgment, enforcement, or the case closing."""

    model_config = ConfigDict(frozen=True)

    case_id: str = Field(min_length=1)
    event: Literal["hearing", "judgment", "enforcement", "closed"]
    note: str = ""
    reported_by: str = "court"


class TimelineEntry(BaseModel):
    """One line of a loan's history as the status shows it."""

    at: datetime
    action: str
    channel: str = ""
    outcome: str = ""
    key: str = ""
    detail: str = ""


class OptOutRequest(BaseModel):
    """The borrower asks not to be contacted on a channel (e.g. replied STOP to a text)."""

    model_config = ConfigDict(frozen=True)

    channel: Literal["sms", "email", "phone", "letter", "visit"]
    requested_by: str = "borrower"


class AgencyContactRequest(BaseModel):
    """An agency asks the guard for a contact slot before it calls, texts or visits."""

    model_config = ConfigDict(frozen=True)

    placement_id: str = Field(min_length=1)
    channel: Literal["sms", "email", "letter", "phone", "visit"]
    agent: str = "agency"
