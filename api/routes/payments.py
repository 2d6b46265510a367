"""Payments: posted by the platform with an Idempotency-Key, applied once, answered by the receipt."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse, Response

from api.auth import Principal, allow
from api.idempotency import KEY_PATTERN, claim, complete, fingerprint, release
from api.marks import mark_paid
from api.problems import ApiError, problem_response, problem_responses
from api.schemas import PaymentBody
from api.state import State, in_thread
from api.webhooks import record_event
from client import register_payment
from models import Payment, PaymentReceipt, PaymentRejected
from models.money import minor_units, quantize

router = APIRouter(prefix="/v1", tags=["payments"])

Payer = Annotated[Principal, allow("platform")]

CONFLICTS = ("the loan is closed", "was already applied")
"""Refusals that are the loan's state, not the request's content (`models.payment.check_payment`): 409."""


def refusal_status(reason: str) -> int:
    """409 for a closed loan or a payment id already applied, 422 for everything else the loan
    refuses (amount, currency, decimals)."""
    return 409 if any(phrase in reason for phrase in CONFLICTS) else 422


def _rejected_event(state: State, loan_id: str, payment: Payment, reason: str, request_id: str) -> None:
    """`payment.rejected` for subscribers: a refused request changes nothing in the loan, so the
    loan records nothing; the API records the event (once per request: its key)."""
    data = {"payment_id": payment.payment_id, "amount": str(payment.amount), "currency": payment.currency}
    record_event(state.engine, loan_id, "payment.rejected", data | {"reason": reason}, f"{loan_id}/api/{request_id}")


@router.post(
    "/loans/{loan_id}/payments",
    status_code=201,
    response_model=PaymentReceipt,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def post_payment(
    loan_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: PaymentBody,
    state: State,
    principal: Payer,
    idempotency_key: Annotated[str, Header(pattern=KEY_PATTERN, description="unique per payment; retry with the same")],
) -> Response:
    """Apply a payment. Send it again with the same Idempotency-Key after a timeout or a lost
    answer: the same body gets the same receipt and applies nothing; another body is a 409."""
    amount = Decimal(body.amount)
    if amount <= 0:
        raise ApiError(422, "the amount must be positive", field="body.amount")
    if quantize(amount, body.currency) != amount:
        raise ApiError(
            422,
            f"{body.amount} has more decimals than {body.currency} allows ({minor_units(body.currency)})",
            field="body.amount",
        )
    payment = Payment(
        payment_id=body.payment_id or idempotency_key,
        amount=amount,
        currency=body.currency,
        paid_at=body.paid_at,
        source=principal.actor + (f" ({body.source})" if body.source else ""),
        reference=body.reference,
    )
    scope = f"payment:{loan_id}"
    fp = fingerprint(body.model_dump(mode="json"))
    found = await in_thread(claim, state.engine, scope, idempotency_key, fp, principal.actor)
    if found.outcome == "conflict":
        raise ApiError(409, "this Idempotency-Key was used with a different body", field="header.idempotency-key")
    if found.outcome == "busy":
        busy = "a request with this Idempotency-Key is in progress; retry later"
        raise ApiError(409, busy, headers={"Retry-After": "2"})
    if found.outcome == "done":
        media = "application/json" if found.status == 201 else "application/problem+json"
        return Response(found.body, status_code=found.status or 200, media_type=media)
    request_id = "api-pay-" + hashlib.sha256(f"{loan_id}\n{idempotency_key}\n{fp}".encode()).hexdigest()[:40]
    try:
        receipt = await register_payment(state.temporal, loan_id, payment, request_id=request_id)
    except PaymentRejected as exc:
        answer = problem_response(refusal_status(str(exc)), str(exc), None, reason=str(exc))
        await in_thread(complete, state.engine, scope, idempotency_key, answer.status_code, bytes(answer.body).decode())
        await in_thread(_rejected_event, state, loan_id, payment, str(exc), request_id)
        return answer
    except BaseException:
        await in_thread(release, state.engine, scope, idempotency_key)
        raise
    text = json.dumps(receipt.model_dump(mode="json"))
    await in_thread(complete, state.engine, scope, idempotency_key, 201, text)
    await mark_paid(state, receipt)
    return JSONResponse(json.loads(text), status_code=201)
