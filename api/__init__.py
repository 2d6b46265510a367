"""The HTTP API (FastAPI): `create_app(client=..., database_url=...)` returns the ASGI app;
`python -m api` (or `make api`) serves it with uvicorn; tokens come from `api.tokens`.

May import every package below it (activities, client, workflows, infra, db, models) and ops
(the audit export); README, "HTTP API"."""

from api.app import create_app
from api.tokens import create_token, revoke_token

__all__ = ["create_app", "create_token", "revoke_token"]
