"""What the client raises besides the domain's own refusals (`models.PaymentRejected`)."""

from __future__ import annotations


class LoanNotFound(LookupError):
    """No collection workflow exists for this loan id."""


class RequestRejected(ValueError):
    """The loan refused a request (a report for a closed task, an unknown placement...)."""


class RequestPending(TimeoutError):
    """The loan has the request (it is durable) but did not answer in time (no worker?)."""
