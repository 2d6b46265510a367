"""Payload encryption: borrowers' personal data never reaches the Temporal server in clear.

Every payload (workflow and activity arguments, results, updates, queries, memos, failure
details) goes through `EncryptionCodec` on its way to the server and back. The codec follows
temporalio/samples-python `encryption/` (AES-256-GCM, 12-byte random nonce in front of the
ciphertext, encoding `binary/encrypted`), so the wire format is the one the Go, TypeScript and
Python samples' codec servers understand, and adds key rotation: payloads carry the id of the
key that sealed them (`encryption-key-id`), the codec seals with its one current key and opens
with any key it holds, so histories written before a rotation stay readable as long as the old
key is kept in the list.

Keys are 32 random bytes, written as base64, one per line in a key file (first line = current)
or comma-separated in COLLECTIONS_CODEC_KEYS (first = current). A key id is a short hash of the
key: stable across processes, safe to log, useless for decrypting.

This module holds no settings: `infra.temporal.data_converter()` decides where keys come from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
"""Encoding marker of a sealed payload; anything else passes `decode` untouched."""
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce, as in the samples


class CodecKeyError(ValueError):
    """A key that cannot be used (bad base64, wrong length) or a payload sealed with a key
    this process does not hold."""


class PayloadDecryptionError(ValueError):
    """A payload that claims our encoding but does not open with the key its id names:
    tampered, truncated, or sealed with a different key that happens to share the id."""


def key_id(key: bytes) -> str:
    """Short, stable, non-secret name of a key (first 16 hex digits of a domain-separated
    SHA-256), so metadata and logs can say which key sealed a payload without revealing it."""
    return hashlib.sha256(b"loan-collections codec key id\x00" + key).hexdigest()[:16]


def server_token(key: bytes) -> str:
    """A bearer token for the codec server derived from `key` (HMAC-SHA256): whoever holds the
    key can recompute it, nobody can get the key back from it, and there is no second secret
    to store. Used only when no token is configured."""
    digest = hmac.new(key, b"loan-collections codec server token", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def parse_key(text: str, where: str = "key") -> bytes:
    """Decode one base64 key; the error names where it came from, never its value."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CodecKeyError(f"{where}: not valid base64") from exc
    if len(key) != KEY_BYTES:
        raise CodecKeyError(f"{where}: an AES-256 key is {KEY_BYTES} bytes, this one is {len(key)}")
    return key


def parse_keys(entries: Iterable[str], source: str) -> list[bytes]:
    """Keys from base64 entries (blank entries and `#` comments skipped), current first."""
    keys: list[bytes] = []
    for number, entry in enumerate(entries, start=1):
        entry = entry.strip()
        if entry and not entry.startswith("#"):
            keys.append(parse_key(entry, f"{source}, entry {number}"))
    return keys


def load_keys(env_value: str, key_file: Path) -> list[bytes]:
    """The configured keys, current first: from `env_value` (COLLECTIONS_CODEC_KEYS) when it is
    set, else from `key_file` when it exists, else none (payloads then travel unencrypted)."""
    if env_value.strip():
        return parse_keys(env_value.split(","), "COLLECTIONS_CODEC_KEYS")
    if key_file.is_file():
        return parse_keys(key_file.read_text().splitlines(), str(key_file))
    return []


def generate_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def ensure_key_file(path: Path) -> bool:
    """Create `path` with one fresh random key (mode 0600) unless it exists; True if created.

    `make run` calls this on first start so that payloads are encrypted by default. O_EXCL makes
    two processes starting at once agree on one key instead of overwriting each other's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # the umask may have narrowed it; never widen beyond 0600
        out.write(encode_key(generate_key()) + "\n")
    return True


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (metadata included, so not even the
    payload's encoding or type shows). Seals with `current`; opens with `current` or any of
    `older`, chosen by the key id in the payload's metadata."""

    def __init__(self, current: bytes, older: Sequence[bytes] = ()) -> None:
        super().__init__()
        self.key_id = key_id(current)
        self._sealer = AESGCM(current)
        self._openers: dict[str, AESGCM] = {key_id(k): AESGCM(k) for k in older}
        self._openers[self.key_id] = self._sealer

    @classmethod
    def from_keys(cls, keys: Sequence[bytes]) -> EncryptionCodec:
        if not keys:
            raise CodecKeyError("no codec key configured")
        return cls(keys[0], keys[1:])

    @property
    def key_ids(self) -> list[str]:
        """Every key id this codec can open, the current one first."""
        return [self.key_id, *(k for k in self._openers if k != self.key_id)]

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(p) for p in payloads]

    def seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self.key_id.encode()},
            data=nonce + self._sealer.encrypt(nonce, payload.SerializeToString(), None),
        )

    def open(self, payload: Payload) -> Payload:
        """The original payload; payloads not sealed by this codec (histories recorded before
        encryption was switched on) pass through unchanged."""
        if payload.metadata.get("encoding", b"") != ENCODING:
            return payload
        kid = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        opener = self._openers.get(kid)
        if opener is None:
            raise CodecKeyError(
                f"payload sealed with key id {kid or '(none)'}, which this process does not hold "
                f"(it holds {', '.join(self.key_ids)}); add that key after the current one in "
                "COLLECTIONS_CODEC_KEYS or the codec key file"
            )
        data = payload.data
        try:
            return Payload.FromString(opener.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None))
        except InvalidTag as exc:
            raise PayloadDecryptionError(
                f"payload sealed with key id {kid} failed authentication (tampered or truncated)"
            ) from exc
