"""The first version of the collection workflow (type `CollectionWorkflow`), kept unchanged so
that loans started before the decider finish on the code they started with and their histories
replay. New loans start as `LoanCollection` (workflows/collection.py). Delete this package once
no run of type `CollectionWorkflow` is open (docs/upgrading.md)."""
