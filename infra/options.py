"""Retry, timeout and priority options, in one place: the collection workflow's activities, the
daily scan's pages and the client's waits for a loan's answer.

Imported by workflow code (through the sandbox's pass-through): constants only, no I/O. Changing
a retry policy or a timeout changes the commands a workflow records only for new activities;
histories already recorded replay whatever these say (the SDK does not compare them)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import Priority, RetryPolicy

# ------------------------------------------------------------------ the collection workflow

ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=2))
"""Activities retry until the database (or the gateway) is back: a lost write is never acceptable."""
ACTIVITY_TIMEOUT = timedelta(seconds=60)
"""start_to_close of each of the collection workflow's activities (`prepare`, `request_contact`,
`perform`)."""

# ------------------------------------------------------------------ the daily scan

SCAN_PAGE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=2))
"""A page retries until the database and the server are back: the next page must not be skipped."""
SCAN_PAGE_TIMEOUT = timedelta(minutes=10)
SCAN_HEARTBEAT = timedelta(minutes=1)
"""A page heartbeats after each loan: a dead worker shows in a minute."""
SCAN_PRIORITY = Priority(priority_key=1)
"""Scans start with the highest task priority (the default is 3): their tasks share the task
queue with the collection loans they start, and must not wait behind that backlog."""
SCAN_WORKFLOW = "OverdueScanWorkflow"
"""The daily scan's workflow type (`workflows.scan.OverdueScanWorkflow`), for the schedule, which
names it rather than importing workflow code (tests/unit/test_layout.py checks the two agree)."""

# ------------------------------------------------------------------ the client

REPLY_WAIT = 60.0
"""Seconds a caller waits for a loan's answer (normally tens of milliseconds; an agency's contact
request one guard decision more)."""
REPLY_RPC_TIMEOUT = timedelta(seconds=5)
"""A query that meets the loan continuing as new can wait for the server's 30 s query deadline
(seen on the test server); a shorter deadline and another try answer it from the new run."""
STARTING_WAIT = 30.0
"""Seconds a request to a loan that is still starting (loading its policy, its first activity,
usually a few tens of milliseconds) is tried again before the refusal is passed on."""
