"""Settings from the environment (or a `.env` file) with local defaults, so `make run` needs no
configuration and production sets only what differs (README: Configuration).

`settings().temporal_task_queue` is the task queue of workers and of new loans: a client call
that starts a workflow uses it unless it is given a queue explicitly."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
"""The project folder (policies/, templates/, rulesets/, data/, var/)."""


class Settings(BaseSettings):
    """Process settings; each field reads the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "collections"
    temporal_ui_port: int = 8233
    temporal_db_file: Path = ROOT / "var" / "temporal.db"
    database_url: str = f"sqlite:///{ROOT / 'var' / 'collections.db'}"
    database_pool_size: int = Field(default=10, validation_alias=AliasChoices("DATABASE_POOL_SIZE", "DB_POOL_SIZE"))
    """Connections each worker keeps open (not SQLite); DB_POOL_SIZE is the older name."""
    database_max_overflow: int = 10
    """Extra connections a worker may open under load, closed when returned (not SQLite)."""
    policies_dir: Path = ROOT / "policies"
    strategies_dir: Path = ROOT / "strategies"
    """Screening and assignment: `segmentation.toml` (the scorecard), `map.toml` (each segment's
    champion), `experiments/*.toml` (champion/challenger tests; docs/strategy.md)."""
    templates_dir: Path = ROOT / "templates"
    rulesets_dir: Path = ROOT / "rulesets"
    channel_adapter: Literal["outbox", "webhook"] = "outbox"
    webhook_url: str = ""
    webhook_timeout_seconds: float = 10.0
    activity_threads: int = 32
    max_cached_workflows: int = 800  # ~375 KiB each: 10,000 loans in flight stay under 500 MB
    codec_keys: SecretStr = Field(default=SecretStr(""), validation_alias=AliasChoices("COLLECTIONS_CODEC_KEYS"))
    """Comma-separated base64 AES-256 keys, current first; overrides `codec_key_file`."""
    codec_key_file: Path = ROOT / "var" / "codec.key"
    """One base64 key per line, current first; `make run` creates it on first start."""
    codec_server_token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("CODEC_SERVER_TOKEN", "COLLECTIONS_CODEC_SERVER_TOKEN"),
    )
    """Bearer token the codec server demands; empty = derived from the current key."""
    codec_server_port: int = 8081
    codec_server_origins: str = ""
    """Extra comma-separated origins allowed to call the codec server (the Web UI's is implied)."""
    api_host: str = "127.0.0.1"
    """Where the HTTP API listens (`make run`, `python -m api`); 0.0.0.0 behind a load balancer."""
    api_port: int = 8000
    api_public_url: str = ""
    """The API's address as its users reach it (banner, docs); empty: http://localhost:API_PORT."""
    api_dev_token_file: Path = ROOT / "var" / "api-token"
    """Where `make run` keeps the development platform token it prints (never in production)."""
    webhook_dispatcher: bool = True
    """Whether each API process delivers webhooks (several may: deliveries are leased)."""
    api_token_cache_seconds: float = Field(default=5.0, ge=0)
    """How long an API process trusts a token it has checked (a revoked token stops working
    within this time); 0: every request reads the token table."""
    desk_max_failures: int = Field(default=5, ge=1)
    """Wrong passwords in a row that lock a desk account (`models.lockout`)."""
    desk_lock_minutes: int = Field(default=15, ge=1)
    """How long a locked desk account stays locked (an operator may unlock it sooner)."""
    desk_idle_minutes: int = Field(default=30, ge=1)
    """A desk session left idle this long ends (the next request asks to sign in again)."""
    desk_secret_key: SecretStr = Field(default=SecretStr(""))
    """Signs the desk's session cookies; every API replica needs the same. Empty: read from
    `desk_secret_file`, which `make run` (or the first app) creates."""
    desk_secret_file: Path = ROOT / "var" / "desk-secret"
    desk_demo_file: Path = ROOT / "var" / "desk-demo-users"
    """Where `make run` keeps the demo desk users' passwords it prints (never in production)."""
    desk_secure_cookies: bool = False
    """Send the desk's cookies only over HTTPS (set it in production behind TLS)."""
    scan_enabled: bool = True
    """Whether workers keep the daily overdue scan's Temporal Schedule running (false: paused)."""
    scan_hour: int = Field(default=1, ge=0, le=23)
    scan_minute: int = Field(default=0, ge=0, le=59)
    scan_timezone: str = "Asia/Shanghai"
    """The zone of SCAN_HOUR:SCAN_MINUTE and of the scan's business date."""
    scan_page_size: int = Field(default=500, ge=1, le=10_000)
    """Loan rows one scan activity reads (and hands over) at a time."""
    scan_pages_per_run: int = Field(default=20, ge=1)
    """Pages before the scan workflow continues as new (sooner if the server suggests it)."""

    @field_validator("scan_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:  # a typo fails when the worker starts, not at 01:00
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


@lru_cache
def settings() -> Settings:
    return Settings()


def task_queue(explicit: str | None = None) -> str:
    """The task queue to use: the one given, else the TEMPORAL_TASK_QUEUE setting."""
    return explicit or settings().temporal_task_queue
