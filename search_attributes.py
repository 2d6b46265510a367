"""The portfolio view's custom search attributes, in one place for workers, workflows and
clients. None carries personal data: Temporal stores search attributes unencrypted."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

STAGE = SearchAttributeKey.for_keyword("CollectionStage")
DPD_BAND = SearchAttributeKey.for_keyword("CollectionDpdBand")
POLICY = SearchAttributeKey.for_keyword("CollectionPolicy")
AGENCY = SearchAttributeKey.for_keyword("CollectionAgency")
CURRENCY = SearchAttributeKey.for_keyword("CollectionCurrency")
OUTSTANDING = SearchAttributeKey.for_int("CollectionOutstandingMinor")
"""Outstanding total in the currency's minor units (an exact integer, never a float)."""

ALL = (STAGE, DPD_BAND, POLICY, AGENCY, CURRENCY, OUTSTANDING)

DPD_BANDS: tuple[tuple[int, str], ...] = ((180, "180+"), (120, "120-179"), (90, "90-119"), (60, "60-89"),
                                          (30, "30-59"), (0, "0-29"))


def dpd_band(dpd: int) -> str:
    """The reporting band of a DPD (bands change where the default ladder wakes the loan)."""
    return next(label for floor, label in DPD_BANDS if dpd >= floor)
