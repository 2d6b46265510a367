"""Operator tools that act on the Temporal side of collection (not the loan book): finding loans
whose workflow is stuck and putting them back on track (`ops.doctor`)."""
