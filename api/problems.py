"""Errors as `application/problem+json` (RFC 9457): every error the API answers has a status, a
title, a detail a person can act on and, for bad input, the fields that are wrong. A client's
bad input is a 4xx, never a 5xx: validation happens before anything is sent to a loan, and the
loan's own refusals (a payment in the wrong currency, a plan the policy does not allow) come
back as 409/422 with the loan's reason."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from client.errors import LoanNotFound, RequestPending

log = logging.getLogger("collections.api")

MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One input that is wrong: where (`body.amount`, `query.page_size`, `header.idempotency-key`)
    and why."""

    field: str
    message: str


class Problem(BaseModel):
    """An error answer (RFC 9457). `reason`: the loan's own words when it refused a request."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    errors: list[FieldError] = Field(default_factory=list)
    reason: str | None = None


class ApiError(Exception):
    """Raised by a route to answer with a problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        field: str | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.title, self.reason = status, detail, title, reason
        self.errors = [FieldError(field=field, message=detail)] if field else []
        self.headers = headers or {}


TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


def problem_response(
    status: int,
    detail: str,
    request: Request | None = None,
    *,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=title or TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else "",
        errors=errors or [],
        reason=reason,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, media_type=MEDIA_TYPE, headers=headers
    )


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:  # FastAPI's `responses` type
    """The OpenAPI `responses` entries for these error codes (problem+json bodies)."""
    return {
        code: {"model": Problem, "description": TITLES.get(code, "Error"), "content": {MEDIA_TYPE: {}}}
        for code in codes
    }


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def install(app: FastAPI) -> None:
    """Answer every error the app can meet as a problem."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(
            exc.status, exc.detail, request, title=exc.title, errors=exc.errors, reason=exc.reason, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldError(field=_field(e.get("loc", ())), message=str(e.get("msg", ""))) for e in exc.errors()]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5]) or "invalid request"
        return problem_response(422, detail, request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, str(exc.detail), request, headers=headers)

    @app.exception_handler(LoanNotFound)
    async def _not_found(request: Request, exc: LoanNotFound) -> JSONResponse:
        return problem_response(404, str(exc), request)

    @app.exception_handler(RequestPending)
    async def _pending(request: Request, exc: RequestPending) -> JSONResponse:
        detail = f"{exc}; the loan has the request and will take it: ask again (same Idempotency-Key) later"
        return problem_response(503, detail, request, headers={"Retry-After": "5"})

    @app.exception_handler(RPCError)
    async def _rpc(request: Request, exc: RPCError) -> JSONResponse:
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return problem_response(503, "Temporal is not reachable; try again", request, headers={"Retry-After": "5"})
        if exc.status == RPCStatusCode.INVALID_ARGUMENT and "search attribute" in str(exc).lower():
            # a listing before any worker registered the portfolio's search attributes
            detail = "the portfolio view is not ready: no worker has registered its search attributes yet"
            return problem_response(503, detail, request, headers={"Retry-After": "30"})
        log.error("Temporal call failed: %s (%s)", exc.status.name if exc.status else "?", type(exc).__name__)
        return problem_response(500, "the request could not be completed", request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The type only: an exception's text can quote the input (personal data stays out of logs).
        log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return problem_response(500, "the request could not be completed", request)
