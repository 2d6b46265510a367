"""Activities: the I/O adapters the workflows cause (database writes, messages, the guard's
decisions, starting loans from the daily scan). Each write is keyed by a business idempotency
key from the workflow and guarded by a unique constraint.

May import `models`, `db`, `infra` and `client` (the scan hands loans over through
`client.loans`); never workflows, ops or the entry points (`starter`, `worker`). Workflows call
these by name (`workflows.calls`); the worker registers them (`worker.create_worker`)."""
