"""Reserved for the collectors' desk (next issue): the work queue of call, visit and review
tasks, and recording their outcomes, over `client` (reports to the loan) and `db` (the task
rows). Never imports activities, workflows' internals or the entry points. Empty until then."""
