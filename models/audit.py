"""The evidential record: hash-chaining of a loan's audit entries and its verification.

Pure functions, no I/O. Every audit entry of a loan carries `seq` (1, 2, 3 ... per loan), the
hash of the entry before it (`prev_hash`; the first entry's is `GENESIS`) and its own `hash`:

    hash = sha256(canonical JSON of {loan_id, seq, key, at, actor, action, stage, rule_id,
                                     evidence_ref, detail, prev_hash}).hexdigest()

The canonical JSON has sorted keys, no whitespace (separators "," and ":"), non-ASCII kept
as is, UTF-8 encoded; `at` is the entry's business time in UTC as ISO 8601 with
microseconds (`2026-12-01T02:00:00.000000+00:00`), `seq` a JSON integer, `detail` the stored
JSON text exactly as stored, everything else strings. A changed field changes the entry's
hash; a deleted, inserted or reordered entry breaks the seq numbering or the prev_hash link.

Entries can be table rows (attributes) or mappings (an export's dicts or CSV rows: `at` as
an ISO string and `seq` as text are accepted).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
"""The prev_hash of a loan's first entry."""

HASHED_FIELDS = ("loan_id", "seq", "key", "at", "actor", "action", "stage", "rule_id", "evidence_ref", "detail")
"""The entry fields the hash covers (plus prev_hash); `id` and `recorded_at` are not covered."""


def _get(entry: Any, name: str, default: Any = None) -> Any:
    if isinstance(entry, Mapping):
        return entry.get(name, default)
    return getattr(entry, name, default)


def canonical_time(at: datetime | str) -> str:
    """`at` in UTC as ISO 8601 with microseconds; a naive time is refused (it has no instant)."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if not isinstance(at, datetime):
        raise TypeError(f"not a time: {at!r}")
    if at.tzinfo is None:
        raise ValueError(f"naive time {at.isoformat()}: the hash needs an aware time")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_bytes(prev_hash: str, fields: Any) -> bytes:
    """The exact bytes `entry_hash` digests (see the module docstring)."""
    payload: dict[str, Any] = {}
    for name in HASHED_FIELDS:
        value = _get(fields, name, "" if name in ("stage", "rule_id", "evidence_ref") else None)
        if value is None:
            raise ValueError(f"audit entry has no {name}")
        if name == "seq":
            payload[name] = int(value)
        elif name == "at":
            payload[name] = canonical_time(value)
        else:
            payload[name] = str(value)
    payload["prev_hash"] = str(prev_hash)
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(prev_hash: str, fields: Any) -> str:
    """sha256 (hex) of the entry's canonical JSON chained onto `prev_hash`."""
    return hashlib.sha256(canonical_bytes(prev_hash, fields)).hexdigest()


def _seq(entry: Any) -> int | None:
    try:
        return int(_get(entry, "seq"))
    except (TypeError, ValueError):
        return None


def _label(seq: int | None, key: Any) -> str:
    return f"entry seq {seq if seq is not None else '?'} (key {key})"


def verify_chain(entries: Iterable[Any]) -> list[str]:
    """Check one loan's entries, in the order stored (by seq). Returns the problems, each
    naming the entry (seq and key) it concerns; an empty list means the chain is intact.

    Detected: a changed entry (its hash does not match its content), a deleted entry (a gap
    in seq, or a first entry that is not seq 1 on the genesis hash), an inserted, reordered
    or duplicated entry (seq out of order, or prev_hash not the previous entry's hash), an
    entry of another loan. Deleting the newest entries leaves a shorter intact chain; only an
    anchor kept outside the database (the head hash) shows that.
    """
    problems: list[str] = []
    prev: Any = None
    prev_seq: int | None = None
    loan_id: Any = None
    seen: dict[int, Any] = {}
    for entry in entries:
        seq, key = _seq(entry), _get(entry, "key")
        label = _label(seq, key)
        stored, linked = _get(entry, "hash") or "", _get(entry, "prev_hash") or ""
        if loan_id is None:
            loan_id = _get(entry, "loan_id")
        elif _get(entry, "loan_id") != loan_id:
            problems.append(f"{label}: belongs to loan {_get(entry, 'loan_id')}, not {loan_id}")

        if not stored:
            problems.append(f"{label}: not chained (no hash)")
        else:
            try:
                if entry_hash(linked, entry) != stored:
                    problems.append(f"{label}: changed: its content does not match its hash")
            except (TypeError, ValueError) as exc:
                problems.append(f"{label}: cannot be hashed: {exc}")

        if seq is None:
            problems.append(f"{label}: no valid seq")
        elif seq in seen:
            problems.append(f"{label}: seq {seq} also used by key {_get(seen[seq], 'key')} (forked chain)")
        else:
            expected = 1 if prev_seq is None else prev_seq + 1
            if seq > expected:
                missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
                after = "at the start" if prev is None else f"after {_label(prev_seq, _get(prev, 'key'))}"
                problems.append(f"{label}: {missing} missing before it, {after} (deleted)")
            elif seq < expected:
                problems.append(
                    f"{label}: out of order after {_label(prev_seq, _get(prev, 'key'))} (reordered or inserted)"
                )
            elif prev is None and linked != GENESIS:
                problems.append(f"{label}: first entry does not start from the genesis hash")
            elif prev is not None and linked != (_get(prev, "hash") or ""):
                problems.append(
                    f"{label}: prev_hash does not match the hash of {_label(prev_seq, _get(prev, 'key'))}"
                    " (an entry between them was deleted, inserted, reordered or rewritten)"
                )
            seen[seq] = entry
        prev = entry
        prev_seq = seq if seq is not None else prev_seq
    return problems
