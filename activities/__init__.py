"""Activities: every piece of I/O the collection workflow causes. Each write is keyed by a
business idempotency key from the workflow and guarded by a unique constraint."""
