"""The activities the workflows call, declared by name and signature only.

The implementations live in `activities/` (registered by `worker.create_worker`), which workflow
code does not import: an activity adapter may reach the client (`activities.scan` starts loans),
and the client needs the workflows' types, so importing them here would close a cycle. A
stub's name is its registered activity name: the command a workflow records is the same as with
the implementation's method (tests/unit/test_layout.py checks every stub names a registered activity
with the same argument and result types)."""

from __future__ import annotations

from temporalio import activity

from models.conduct import GuardDecision
from models.effects import BatchResult, EffectBatch
from models.requests import GuardRequest, Prepared, PrepareRequest
from models.scan import ScanPageRequest, ScanPageResult


def _stub(name: str) -> NotImplementedError:
    return NotImplementedError(f"activity {name!r} is a stub: the worker runs activities/'s implementation")


@activity.defn(name="prepare")
async def prepare(req: PrepareRequest) -> Prepared:
    """`activities.start.StartActivities.prepare`: pin the policy and rules, register the loan."""
    raise _stub("prepare")


@activity.defn(name="request_contact")
def request_contact(req: GuardRequest) -> GuardDecision:
    """`activities.guard.GuardActivities.request_contact`: the conduct guard's decision."""
    raise _stub("request_contact")


@activity.defn(name="perform")
def perform(batch: EffectBatch) -> BatchResult:
    """`activities.effects.EffectActivities.perform`: a batch of effects in one transaction."""
    raise _stub("perform")


@activity.defn(name="scan_page")
async def scan_page(req: ScanPageRequest) -> ScanPageResult:
    """`activities.scan.ScanActivities.scan_page`: one page of the loan book handed over."""
    raise _stub("scan_page")


STUBS = (prepare, request_contact, perform, scan_page)
