"""Operator tools, outside the workflows: the audit export (`ops.audit`) and the sample
portfolio (`ops.sample`) read and write the database directly, through `db`'s engine
(`db.store.make_engine`); finding stuck loans and resetting them (`ops.doctor`) acts on the
Temporal side. The CLI (`starter.py`) prints what they return.

May import `db`, `infra`, `models`, `client` and `workflows` (the doctor replays histories with
the worker's workflow classes, `workflows.registry`); never activities or the entry points."""
