"""Settings and the Temporal plumbing every process shares (one data converter, one connect).

Settings come from the environment (or a `.env` file) with local defaults, so `make run`
needs no configuration and production sets only what differs.

Privacy: the data converter encrypts every payload when a codec key is available (see codec.py),
and `install_log_masking` keeps phone numbers and e-mail addresses out of the logs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

import codec

ROOT = Path(__file__).resolve().parent

WORKFLOW_ID_PREFIX = "collection-"
COLLECTION_TYPES = ("LoanCollection", "CollectionWorkflow")
"""Workflow types of a loan's collection: the decider's shell (new loans) and the first version
(loans started before it, until they close)."""

log = logging.getLogger("collections.config")


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


_process_task_queue: list[str] = []


def remember_task_queue(name: str) -> None:
    """Record the task queue a worker of this process serves, so that starters in the same
    process (tests, `make run`) send loans to it without being told again."""
    _process_task_queue[:] = [name]


def task_queue(explicit: str | None = None) -> str:
    """The task queue to use: the one given, else this process's worker's, else the setting."""
    return explicit or (_process_task_queue[0] if _process_task_queue else settings().temporal_task_queue)


def codec_keys() -> list[bytes]:
    """The configured codec keys, current first (COLLECTIONS_CODEC_KEYS, else the key file)."""
    cfg = settings()
    return codec.load_keys(cfg.codec_keys.get_secret_value(), cfg.codec_key_file)


@lru_cache
def data_converter() -> DataConverter:
    """The one converter for clients and workers: pydantic models, Decimal and datetime intact,
    and, when a codec key is configured, every payload sealed with AES-256-GCM. Failure messages
    and stack traces move into an (encrypted) payload too, since an error can quote the input
    it rejected. Without a key it is the plain pydantic converter, with a warning (logged once,
    the result is cached): history can be read by anyone with access to the server."""
    keys = codec_keys()
    if not keys:
        log.warning(
            "payloads are NOT encrypted: no codec key (set COLLECTIONS_CODEC_KEYS or create %s; `make run` creates it)",
            settings().codec_key_file,
        )
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec.EncryptionCodec.from_keys(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def payload_codec() -> codec.EncryptionCodec | None:
    """The project converter's codec, or None when payloads are not encrypted."""
    found = data_converter().payload_codec
    return found if isinstance(found, codec.EncryptionCodec) else None


def ensure_codec_key() -> bool:
    """Create the key file when no key is configured at all (what `make run` does on first
    start, so payloads are encrypted by default); True if a key was created. The converter is
    recomputed afterwards in case something asked for it before the key existed."""
    cfg = settings()
    if cfg.codec_keys.get_secret_value().strip():
        return False
    created = codec.ensure_key_file(cfg.codec_key_file)
    if created:
        data_converter.cache_clear()
    return created


def codec_server_token() -> str | None:
    """The codec server's bearer token: the configured one, else one derived from the current
    key (so a key holder can always recompute it), else None (no key, nothing to decode)."""
    configured = settings().codec_server_token.get_secret_value().strip()
    if configured:
        return configured
    keys = codec_keys()
    return codec.server_token(keys[0]) if keys else None


def __getattr__(name: str) -> Any:
    """`config.DATA_CONVERTER` stays available to existing callers but is looked up when used,
    not at import: the key file may be created (`make run`) or the environment changed (tests)
    after this module is imported."""
    if name == "DATA_CONVERTER":
        return data_converter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def with_converter(client: Client) -> Client:
    """`client` itself if it already uses exactly the project's converter, else a copy that does
    (a test environment's client comes with the SDK's default converter). The converter object
    is compared, not its payload converter class: the same pydantic converter without the codec
    would write personal data in clear."""
    converter = data_converter()
    if client.data_converter is converter:
        return client
    config = client.config()
    config["data_converter"] = converter
    return Client(**config)


def workflow_id(loan_id: str) -> str:
    """The collection workflow id of a loan: one running collection per loan."""
    return f"{WORKFLOW_ID_PREFIX}{loan_id}"


def venv_binary(name: str) -> str:
    """Path of a binary installed into this virtualenv (temporal, temporal-test-server), so
    the SDK never tries to download a server."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; install the project (pip install -e .)")
    return found


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    """A Temporal client with the project's data converter."""
    cfg = settings()
    return await Client.connect(
        address or cfg.temporal_address,
        namespace=namespace or cfg.temporal_namespace,
        data_converter=data_converter(),
    )


_EMAIL = re.compile(
    r"(?<![\w.%+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
)
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d(?:[ -]?\(?\d\)?){6,16}"  # international: +86 138 1234 5678, +8613812345678, +1 (415) 555-0100
    r"|\(?\d{2,4}\)?[ -]\d{3,4}[ -]\d{4}"  # grouped: 138-1234-5678, (021) 6123 4567
    r"|\d{8,15}"  # a bare run of digits, like 13812345678
    r")(?![\w.-])"  # not inside a longer token: amounts, dates, ids and UUIDs stay readable
)


def mask_personal_data(text: str) -> str:
    """Mask e-mail addresses (`l***@example.cn`) and phone numbers (`***5678`) in free text,
    the way `activities.rendering.mask` masks a single recipient."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub(lambda m: "***" + "".join(c for c in m.group(0) if c.isdigit())[-4:], text)


class MaskingFilter(logging.Filter):
    """Masks phone numbers and e-mail addresses in every record a handler emits: message,
    arguments and exception text. A log line is read by more people, and kept longer, than the
    database; the full number is never needed to follow what happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message, formattable = record.getMessage(), True
        except Exception:  # noqa: BLE001 - a malformed record is still emitted, and still masked
            message, formattable = f"{record.msg!s} (unformattable arguments: {record.args!r})", False
        masked = mask_personal_data(message)
        if masked != message or not formattable:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_personal_data(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_personal_data(record.stack_info)
        return True


def install_log_masking(logger: logging.Logger | None = None) -> MaskingFilter:
    """Add the masking filter to every handler of `logger` (default: the root logger). On the
    handlers, not the logger, because a logger's filters do not see records propagated from
    its children (temporalio's, activities')."""
    target = logger or logging.getLogger()
    existing = next((f for h in target.handlers for f in h.filters if isinstance(f, MaskingFilter)), None)
    masking = existing or MaskingFilter()
    for handler in target.handlers:
        if masking not in handler.filters:
            handler.addFilter(masking)
    return masking


def exit_process(code: int) -> None:
    """Exit without interpreter finalisation. The Temporal core's threads can still call into
    Python while the interpreter tears down and abort it ("PyGILState_Release"), turning a
    finished command into exit code -6; everything is flushed and closed by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
