"""Compatibility shim, for code outside this repository that still does `import config`: the
names it had, now living in `infra/` (settings: `infra.settings`; the data converter, `connect`
and workflow ids: `infra.temporal`; log masking: `infra.logs`; process helpers: `infra.process`).
Nothing in this repository imports it (tests/unit/test_layout.py checks that); new code imports
`infra`. `remember_task_queue` is gone: client calls take the task queue as an argument or
from the TEMPORAL_TASK_QUEUE setting, never from a worker in the same process."""

from __future__ import annotations

from typing import Any

from infra.logs import MaskingFilter, install_log_masking, mask_personal_data
from infra.process import exit_process, venv_binary
from infra.settings import ROOT, Settings, settings, task_queue
from infra.temporal import (
    COLLECTION_TYPES,
    WORKFLOW_ID_PREFIX,
    codec_keys,
    codec_server_token,
    connect,
    data_converter,
    ensure_codec_key,
    payload_codec,
    with_converter,
    workflow_id,
)

__all__ = [
    "COLLECTION_TYPES",
    "ROOT",
    "WORKFLOW_ID_PREFIX",
    "MaskingFilter",
    "Settings",
    "codec_keys",
    "codec_server_token",
    "connect",
    "data_converter",
    "ensure_codec_key",
    "exit_process",
    "install_log_masking",
    "mask_personal_data",
    "payload_codec",
    "settings",
    "task_queue",
    "venv_binary",
    "with_converter",
    "workflow_id",
]


def __getattr__(name: str) -> Any:
    """`config.DATA_CONVERTER`, looked up when used (the key file may be created after import)."""
    if name == "DATA_CONVERTER":
        return data_converter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
