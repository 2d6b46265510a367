"""Reserved for the HTTP API (next issue): the lending platform's calls (start a loan's
collection, pay, negotiate, status, portfolio) over HTTP, as a thin layer over `client`. May
import `client`, `infra` and `models`; never activities, workflows' internals, db or the entry
points. Empty until then."""
