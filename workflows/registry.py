"""Every workflow class a worker runs, in one list: the worker registers it, the replay tests and
`ops.doctor` replay histories with it."""

from __future__ import annotations

from workflows.collection import CollectionWorkflow
from workflows.legacy.collection_v1 import LegacyCollectionWorkflow
from workflows.scan import OverdueScanWorkflow

WORKFLOWS: list[type] = [CollectionWorkflow, LegacyCollectionWorkflow, OverdueScanWorkflow]
"""New loans (`LoanCollection`), loans started before the decider (`CollectionWorkflow`, until
none is left open), the daily scan."""
