"""The system of record: loans, ledger, outbox, tasks, placements, cases and the audit trail.

Kept apart from `models/` because SQLModel table classes must never be imported by workflow
code (the sandbox would define the tables twice).
"""
