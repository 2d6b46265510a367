"""The Temporal plumbing every process shares: one data converter (pydantic models, Decimal and
datetime intact, every payload encrypted when a codec key is configured: `infra.codec`), one
`connect`, and the names of loans' workflows (ids and types).

Privacy: without a codec key payloads are written in clear (with a warning, once).
"""

from __future__ import annotations

import dataclasses
import logging
from functools import lru_cache

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from infra import codec
from infra.settings import settings

WORKFLOW_ID_PREFIX = "collection-"
COLLECTION_TYPES = ("LoanCollection", "CollectionWorkflow")
"""Workflow types of a loan's collection: the decider's shell (new loans) and the first version
(loans started before it, until they close)."""

log = logging.getLogger("collections.config")


def workflow_id(loan_id: str) -> str:
    """The collection workflow id of a loan: one running collection per loan."""
    return f"{WORKFLOW_ID_PREFIX}{loan_id}"


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


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    """A Temporal client with the project's data converter."""
    cfg = settings()
    return await Client.connect(
        address or cfg.temporal_address,
        namespace=namespace or cfg.temporal_namespace,
        data_converter=data_converter(),
    )
