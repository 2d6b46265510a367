"""The domain: pydantic types and pure functions (ladder, fees, allocation). No I/O, no clock,
no randomness, so workflows can use them and tests can call them directly. Imports only the
standard library, pydantic and models itself (tests/unit/test_layout.py checks it); reading policy,
rule-set and calendar files is `infra.loaders`', the template linter is `activities.linter`."""

from models.allocation import Allocation, allocate
from models.events import AgencyReport, CourtReport, TaskOutcome, TaskReport, TimelineEntry
from models.loan import Balance, Borrower, OverdueLoan, Stage
from models.payment import Payment, PaymentReceipt, PaymentRejected
from models.policy import Policy, PolicyError, parse_policy
from models.status import CollectionInput, CollectionState, CollectionStatus

__all__ = [
    "AgencyReport",
    "Allocation",
    "Balance",
    "Borrower",
    "CollectionInput",
    "CollectionState",
    "CollectionStatus",
    "CourtReport",
    "OverdueLoan",
    "Payment",
    "PaymentReceipt",
    "PaymentRejected",
    "Policy",
    "PolicyError",
    "Stage",
    "TaskOutcome",
    "TaskReport",
    "TimelineEntry",
    "allocate",
    "parse_policy",
]
