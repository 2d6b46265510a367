"""How clients talk to a loan's workflow: a request goes in by signal, its answer comes back by
query.

    request (signal) the request, under a request id           the loan takes it at its next quiet
                                                                moment: applies it, or refuses it
                                                                (nothing changes)
    reply (query)   the answer for that request id             a receipt, a decision, a status...
    check (query)   would the loan refuse this request now?    a dry run: nothing is written

Why not Temporal updates, which answer in one call: with temporalio 1.35 an update accepted in
a workflow task that a fresh worker took over from a dead one is written to the history in an
order the SDK cannot replay ("Update machine does not handle this event"; sdk-python#1591),
whatever the handler does. A signal is an ordinary history event, replayed where it was
recorded. The client (`starter`) hides the three steps behind the same functions as before.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from models.lifecycle.events import (
    AgencyContactAsked,
    AgencyReported,
    CourtReported,
    DisputeRaised,
    DisputeResolved,
    HardshipReported,
    HardshipReviewed,
    OptedOut,
    PaymentReceived,
    PlanProposed,
    PromiseMade,
    SettlementOffered,
    StopRequested,
    TaskReported,
)
from models.status import Reply

__all__ = ["REPLIES_KEPT", "ClientRequest", "Envelope", "Reply", "StatusAsked"]


class StatusAsked(BaseModel):
    """The status as of the moment the loan takes the request (the server's clock)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["status"] = "status"


ClientRequest = Annotated[
    PaymentReceived
    | TaskReported
    | AgencyReported
    | CourtReported
    | OptedOut
    | AgencyContactAsked
    | PromiseMade
    | PlanProposed
    | SettlementOffered
    | HardshipReported
    | HardshipReviewed
    | DisputeRaised
    | DisputeResolved
    | StopRequested
    | StatusAsked,
    Field(discriminator="kind"),
]


class Envelope(BaseModel):
    """A request, the id its answer is kept under (unique per call: the client makes it), and
    when the client sent it (`sent_at`, on the server's clock: the client's own, or a test
    server's virtual one). The loan takes the request at that time (never earlier than its own
    clock): a workflow must not read its clock to decide, since temporalio 1.35 runs events that
    arrive between workflow tasks, on a worker without the loan in its cache, in an activation
    carrying an earlier task's time (tests/sdk_bugs). Without `sent_at` the request takes the
    loan's clock."""

    request_id: str = Field(min_length=1, max_length=200)
    request: ClientRequest
    sent_at: AwareDatetime | None = None


REPLIES_KEPT = 32
"""Answers a loan keeps for its callers to read (a caller reads its answer at once)."""
