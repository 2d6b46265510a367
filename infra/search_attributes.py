"""The portfolio view's custom search attributes, in one place for workers, workflows and
clients. None carries personal data: Temporal stores search attributes unencrypted."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

from models.lifecycle import views
from models.lifecycle.views import DPD_BANDS, dpd_band

STAGE = SearchAttributeKey.for_keyword(views.STAGE)
DPD_BAND = SearchAttributeKey.for_keyword(views.DPD_BAND)
POLICY = SearchAttributeKey.for_keyword(views.POLICY)
AGENCY = SearchAttributeKey.for_keyword(views.AGENCY)
CURRENCY = SearchAttributeKey.for_keyword(views.CURRENCY)
OUTSTANDING = SearchAttributeKey.for_int(views.OUTSTANDING)
"""Outstanding total in the currency's minor units (an exact integer, never a float)."""
SEGMENT = SearchAttributeKey.for_keyword(views.SEGMENT)
"""The screening's segment (screened loans only)."""
ARM = SearchAttributeKey.for_keyword(views.ARM)
"""`<experiment>/<arm>`, or the arm alone (`champion`, `explicit`) when no experiment assigned it."""

ALL = (STAGE, DPD_BAND, POLICY, AGENCY, CURRENCY, OUTSTANDING, SEGMENT, ARM)
_KEYWORDS = {key.name: key for key in (STAGE, DPD_BAND, POLICY, AGENCY, CURRENCY, SEGMENT, ARM)}
_INTS = {key.name: key for key in (OUTSTANDING,)}


def updates(values: Mapping[str, str | int]) -> list[SearchAttributeUpdate[str] | SearchAttributeUpdate[int]]:
    """The upserts setting these attributes (by name: a keyword's text, an int's number)."""
    return [
        _INTS[name].value_set(value) if isinstance(value, int) else _KEYWORDS[name].value_set(value)
        for name, value in values.items()
    ]


__all__ = [
    "AGENCY",
    "ALL",
    "ARM",
    "CURRENCY",
    "DPD_BAND",
    "DPD_BANDS",
    "OUTSTANDING",
    "POLICY",
    "SEGMENT",
    "STAGE",
    "dpd_band",
    "updates",
]
