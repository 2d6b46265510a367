"""Workflows: thin shells over `models` (the collection workflow runs the decider,
`models.lifecycle`; the daily scan walks the loan book page by page).

They import `models`, `infra.options` and `infra.search_attributes` (through the sandbox's
pass-through), and call activities by name through `workflows.calls`, never importing activity
code. `workflows/legacy/` is the frozen first version of the collection workflow: it still
imports the activity classes, the one exception the import contracts allow (pyproject.toml).
The worker registers `workflows.registry.WORKFLOWS`."""
