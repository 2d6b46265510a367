"""Personal data never sits in clear in Temporal: payloads are sealed with AES-256-GCM (infra/codec.py),
keys rotate without losing old histories, the codec server decodes only for holders of the
token, and logs mask phone numbers and e-mail addresses."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import Engine
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.history.v1 import History
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import starter
import worker
from infra import codec, codec_server
from infra.logs import MaskingFilter, install_log_masking, mask_personal_data
from infra.process import venv_binary
from infra.settings import ROOT, settings
from infra.temporal import (
    codec_server_token,
    data_converter,
    ensure_codec_key,
    payload_codec,
    with_converter,
    workflow_id,
)
from models import Payment
from tests.helpers import Harness, free_port, make_loan

NAME, PHONE, EMAIL = "李明", "+8613812345678", "li.ming@example.cn"
ADDRESS = "上海市浦东新区世纪大道1号"
UI_ORIGIN = "http://localhost:8233"


def reset_config() -> None:
    """Settings and converter are cached per process; tests that change the environment drop
    them before and after, so no other test sees this test's keys."""
    settings.cache_clear()
    data_converter.cache_clear()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[bytes]]:
    """A fresh current key in COLLECTIONS_CODEC_KEYS (and no key file), for this test only."""
    key = codec.generate_key()
    monkeypatch.setenv("COLLECTIONS_CODEC_KEYS", codec.encode_key(key))
    monkeypatch.setenv("CODEC_KEY_FILE", str(tmp_path / "absent.key"))
    monkeypatch.delenv("CODEC_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("COLLECTIONS_CODEC_SERVER_TOKEN", raising=False)
    reset_config()
    yield [key]
    monkeypatch.undo()
    reset_config()


@pytest.fixture
async def sealed_env(keys: list[bytes]) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server whose client uses the project converter, which now encrypts."""
    converter = data_converter()
    assert isinstance(converter.payload_codec, codec.EncryptionCodec)
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"),
        data_converter=converter,
    )
    yield environment
    await environment.shutdown()


@pytest.fixture
async def sealed(sealed_env: WorkflowEnvironment, db_url: str, engine: Engine) -> AsyncIterator[Harness]:
    queue = f"privacy-{uuid.uuid4()}"
    async with worker.create_worker(sealed_env.client, task_queue=queue, database_url=db_url):
        yield Harness(env=sealed_env, engine=engine, task_queue=queue)


def payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text, ensure_ascii=False).encode())


def all_payloads(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload anywhere inside a protobuf message (inputs, results, update arguments,
    markers, failures' encoded attributes, memos, ...), with the field path that leads to it."""
    if isinstance(message, Payload):
        yield path, message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            items: Iterable[tuple[str, object]] = [(field.name, value)]
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            items = [(f"{field.name}[{k}]", v) for k, v in value.items()]
        else:
            items = [(f"{field.name}[{i}]", v) for i, v in enumerate(value)]
        for name, item in items:
            if isinstance(item, Message):
                yield from all_payloads(item, f"{path}.{name}")


def sdk_plain(path: str) -> bool:
    """Payloads the SDK writes past the codec by design: search attributes (the server indexes
    them), `workflow.patched` markers (the patch id) and a local activity marker's bookkeeping
    (`details[data]`: sequence, attempt, activity type, times; its `details[result]` is sealed).
    They hold no borrower data; the raw scan of the whole history checks that too."""
    return (
        "search_attributes" in path
        or "[patch-data]" in path
        or (".marker_recorded_event_attributes.details[data]" in path)
    )


def clear_forms(text: str) -> list[str]:
    """How `text` would look if it were in clear: raw, JSON-escaped (`\\u674e`), JSON raw."""
    return sorted({text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]})


# --- end to end: a loan's whole history on the server -------------------------------------------


async def test_history_holds_no_personal_data_in_clear(sealed: Harness, keys: list[bytes]) -> None:
    loan = make_loan(dpd=0, now=await sealed.now(), phone=PHONE, email=EMAIL, address=ADDRESS)
    assert loan.borrower.name == NAME
    await sealed.start(loan)
    await sealed.at_dpd(loan, 4)  # DPD 1 SMS, DPD 3 SMS and e-mail: activities got phone and e-mail
    receipt = await starter.register_payment(
        sealed.client,
        loan.loan_id,
        Payment(
            payment_id=f"P-{uuid.uuid4().hex[:8]}",
            amount=Decimal("100.00"),
            currency="CNY",
            paid_at=await sealed.now(),
            reference=f"转账 {NAME} {PHONE}",
        ),
    )
    assert receipt.paid_total == Decimal("100.00")
    status = await sealed.status(loan)
    assert {e.channel for e in status.timeline} >= {"sms", "email"}  # the contacts really went out

    history = await sealed.client.get_workflow_handle(workflow_id(loan.loan_id)).fetch_history()
    proto = History(events=history.events)
    raw = proto.SerializeToString()
    as_json = history.to_json()
    for secret in (NAME, PHONE, EMAIL, ADDRESS):
        for form in clear_forms(secret):
            assert form.encode() not in raw, f"{form!r} in clear in the raw history"
            assert form not in as_json, f"{form!r} in clear in the history JSON"

    sealed_ids = {codec.key_id(keys[0]).encode()}
    found = [p for path, p in all_payloads(proto) if not sdk_plain(path)]
    assert len(found) > 10
    for p in found:
        assert p.metadata["encoding"] == codec.ENCODING and p.metadata[codec.KEY_ID_METADATA] in sealed_ids

    # The detector works: with the key the very same history shows the borrower.
    opened = await codec.EncryptionCodec(keys[0]).decode(found)
    assert any(EMAIL.encode() in p.data for p in opened) and any(NAME.encode() in p.data for p in opened)


# --- the codec --------------------------------------------------------------------------------


async def test_codec_round_trips_and_seals_metadata_too() -> None:
    key = codec.generate_key()
    sealer = codec.EncryptionCodec(key)
    original = [payload(NAME), payload(EMAIL), Payload(metadata={"encoding": b"binary/null"})]
    sealed = await sealer.encode(original)
    assert [p.metadata["encoding"] for p in sealed] == [codec.ENCODING] * 3
    assert {p.metadata[codec.KEY_ID_METADATA] for p in sealed} == {sealer.key_id.encode()}
    assert all(b"json/plain" not in p.data and EMAIL.encode() not in p.data for p in sealed)
    assert sealed[0].data != (await sealer.encode([original[0]]))[0].data  # a fresh nonce each time
    assert await sealer.decode(sealed) == original
    plain = payload("not sealed")
    assert await sealer.decode([plain]) == [plain]  # histories from before encryption stay readable


def test_key_id_is_short_stable_and_not_the_key() -> None:
    key = codec.generate_key()
    kid = codec.key_id(key)
    assert kid == codec.key_id(bytes(key)) and kid != codec.key_id(codec.generate_key())
    assert len(kid) == 16 and kid not in (key.hex(), codec.encode_key(key)) and kid not in key.hex()
    assert codec.server_token(key) not in (key.hex(), codec.encode_key(key))


async def test_old_keys_still_decrypt_after_rotation_and_unknown_keys_fail_clearly() -> None:
    old, new, stranger = codec.generate_key(), codec.generate_key(), codec.generate_key()
    before = await codec.EncryptionCodec(old).encode([payload(PHONE)])
    rotated = codec.EncryptionCodec(new, [old])
    assert rotated.key_id == codec.key_id(new) and rotated.key_ids == [codec.key_id(new), codec.key_id(old)]
    assert await rotated.decode(before) == [payload(PHONE)]
    after = await rotated.encode([payload(PHONE)])
    assert after[0].metadata[codec.KEY_ID_METADATA] == codec.key_id(new).encode()

    with pytest.raises(codec.CodecKeyError, match=codec.key_id(old)) as unknown:
        await codec.EncryptionCodec(stranger).decode(before)
    assert "does not hold" in str(unknown.value) and codec.encode_key(old) not in str(unknown.value)

    tampered = Payload()
    tampered.CopyFrom(after[0])
    tampered.data = after[0].data[:-1] + bytes([after[0].data[-1] ^ 1])
    with pytest.raises(codec.PayloadDecryptionError, match="failed authentication"):
        await rotated.decode([tampered])


def test_keys_come_from_the_environment_or_the_key_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = codec.generate_key(), codec.generate_key()
    key_file = tmp_path / "codec.key"
    monkeypatch.delenv("COLLECTIONS_CODEC_KEYS", raising=False)
    monkeypatch.setenv("CODEC_KEY_FILE", str(key_file))
    try:
        reset_config()
        with caplog.at_level(logging.WARNING, logger="collections.config"):
            assert data_converter() is pydantic_data_converter  # no key anywhere
            assert data_converter() is pydantic_data_converter
            assert payload_codec() is None and codec_server_token() is None
        assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
        assert "NOT encrypted" in caplog.records[0].message

        key_file.write_text(f"# rotated\n{codec.encode_key(new)}\n\n{codec.encode_key(old)}\n")
        reset_config()
        found = payload_codec()
        assert found is not None and found.key_ids == [codec.key_id(new), codec.key_id(old)]
        assert data_converter() is data_converter()

        monkeypatch.setenv("COLLECTIONS_CODEC_KEYS", f"{codec.encode_key(old)}, {codec.encode_key(new)}")
        reset_config()
        found = payload_codec()
        assert found is not None and found.key_id == codec.key_id(old)  # the environment wins

        monkeypatch.setenv("COLLECTIONS_CODEC_KEYS", "c2hvcnQ=")
        reset_config()
        with pytest.raises(codec.CodecKeyError, match="COLLECTIONS_CODEC_KEYS, entry 1: an AES-256 key is 32 bytes"):
            data_converter()
    finally:
        monkeypatch.undo()
        reset_config()


def test_ensure_key_file_creates_one_private_key_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "var" / "codec.key"
    assert codec.ensure_key_file(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    content = key_file.read_text()
    assert len(codec.parse_keys(content.splitlines(), "file")) == 1
    assert not codec.ensure_key_file(key_file) and key_file.read_text() == content

    # what `make run` does: no key configured -> a key file, and the converter encrypts with it
    other = tmp_path / "run" / "codec.key"
    monkeypatch.delenv("COLLECTIONS_CODEC_KEYS", raising=False)
    monkeypatch.setenv("CODEC_KEY_FILE", str(other))
    try:
        reset_config()
        assert payload_codec() is None
        assert ensure_codec_key() and other.is_file()
        found = payload_codec()
        assert found is not None and found.key_id == codec.key_id(codec.parse_key(other.read_text()))
        assert not ensure_codec_key()
    finally:
        monkeypatch.undo()
        reset_config()


async def test_with_converter_gives_exactly_the_project_converter(sealed_env: WorkflowEnvironment) -> None:
    converter = data_converter()
    assert with_converter(sealed_env.client) is sealed_env.client
    plain_config = sealed_env.client.config()
    plain_config["data_converter"] = pydantic_data_converter  # same payload converter class, no codec
    plain = Client(**plain_config)
    assert with_converter(plain).data_converter is converter


def test_banner_says_how_to_read_payloads(keys: list[bytes]) -> None:
    cfg = settings()
    text = worker._banner(cfg, 20)
    token = codec_server_token()
    assert token == codec.server_token(keys[0])
    assert f"Payloads are encrypted (key id {codec.key_id(keys[0])}, key in COLLECTIONS_CODEC_KEYS)" in text
    assert "make codec-server" in text and f"http://localhost:{cfg.codec_server_port}/{token}" in text
    assert f"--codec-auth 'Bearer {token}'" in text and codec.encode_key(keys[0]) not in text


# --- the codec server -------------------------------------------------------------------------


@pytest.fixture
async def codec_client() -> AsyncIterator[tuple[TestClient, codec.EncryptionCodec, str]]:
    sealer = codec.EncryptionCodec(codec.generate_key())
    token = "s3cret-token"
    app = codec_server.build_app(sealer, token, [UI_ORIGIN])
    async with TestClient(TestServer(app)) as client:  # a real server on a free local port
        yield client, sealer, token


def body(payloads: list[Payload]) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


async def test_codec_server_decodes_with_the_token_and_refuses_without(
    codec_client: tuple[TestClient, codec.EncryptionCodec, str],
) -> None:
    client, sealer, token = codec_client
    original = [payload(NAME), payload(EMAIL)]
    sealed = body(await sealer.encode(original))
    json_headers = {"Content-Type": "application/json", "X-Namespace": "default", "Origin": UI_ORIGIN}

    missing = await client.post("/decode", data=sealed, headers=json_headers)
    assert missing.status == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.headers["Access-Control-Allow-Origin"] == UI_ORIGIN  # the UI can show why
    wrong = await client.post("/decode", data=sealed, headers={**json_headers, "Authorization": "Bearer nope"})
    assert wrong.status == 403
    for refused in (missing, wrong):
        assert NAME not in await refused.text() and EMAIL not in await refused.text()
    assert (await client.post("/nope/decode", data=sealed, headers=json_headers)).status == 403
    assert (await client.post("/encode", data=body(original), headers=json_headers)).status == 401

    decoded = await client.post("/decode", data=sealed, headers={**json_headers, "Authorization": f"Bearer {token}"})
    assert decoded.status == 200 and decoded.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert list(json_format.Parse(await decoded.text(), Payloads()).payloads) == original

    via_path = await client.post(f"/{token}/decode", data=sealed, headers=json_headers)  # the Web UI's way
    assert list(json_format.Parse(await via_path.text(), Payloads()).payloads) == original

    encoded = await client.post(
        "/encode", data=body(original), headers={**json_headers, "Authorization": f"Bearer {token}"}
    )
    assert encoded.status == 200
    assert await sealer.decode(list(json_format.Parse(await encoded.text(), Payloads()).payloads)) == original

    stranger = body(await codec.EncryptionCodec(codec.generate_key()).encode(original))
    unknown = await client.post("/decode", data=stranger, headers={**json_headers, "Authorization": f"Bearer {token}"})
    assert unknown.status == 422 and "does not hold" in (await unknown.json())["error"]


async def test_codec_server_answers_the_web_ui_preflight_only_for_its_origin(
    codec_client: tuple[TestClient, codec.EncryptionCodec, str],
) -> None:
    client, _, token = codec_client
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"}
    for path in ("/decode", "/encode", f"/{token}/decode"):
        ok = await client.options(path, headers={**ask, "Origin": UI_ORIGIN})
        assert ok.status == 204 and ok.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
        assert "POST" in ok.headers["Access-Control-Allow-Methods"]
        assert {"content-type", "x-namespace", "authorization"} <= set(
            ok.headers["Access-Control-Allow-Headers"].split(",")
        )
    other = await client.options("/decode", headers={**ask, "Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_codec_server_command_serves_on_the_given_port(tmp_path: Path) -> None:
    key = codec.generate_key()
    port = free_port()
    env = {**os.environ, "COLLECTIONS_CODEC_KEYS": codec.encode_key(key), "CODEC_SERVER_TOKEN": "cli-token"}
    log = tmp_path / "codec_server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.codec_server", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        sealed = Payloads(payloads=[codec.EncryptionCodec(key).seal(payload(PHONE))])
        url = f"http://127.0.0.1:{port}/decode"
        deadline = time.monotonic() + 30
        while True:
            try:
                refused = httpx.post(
                    url,
                    content=json_format.MessageToJson(sealed),
                    timeout=5,
                    headers={"Content-Type": "application/json"},
                )
                break
            except httpx.ConnectError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert refused.status_code == 401
        answer = httpx.post(
            url,
            content=json_format.MessageToJson(sealed),
            timeout=5,
            headers={"Content-Type": "application/json", "Authorization": "Bearer cli-token"},
        )
        assert answer.status_code == 200
        decoded = json_format.Parse(answer.text, Payloads()).payloads[0]
        assert json.loads(decoded.data) == PHONE and base64.b64encode(decoded.data).decode() in answer.text
        assert f"key ids {codec.key_id(key)}" in log.read_text()
        assert "cli-token" not in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- logs -------------------------------------------------------------------------------------


def test_log_filter_masks_phone_numbers_and_email_addresses() -> None:
    logger = logging.getLogger(f"test.privacy.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger.addHandler(handler)
    install_log_masking(logger)
    install_log_masking(logger)  # idempotent
    assert sum(isinstance(f, MaskingFilter) for f in handler.filters) == 1

    child = logging.getLogger(f"{logger.name}.child")  # propagated records are masked too
    logger.warning("sms to %s, mail to %s", PHONE, EMAIL)
    child.info("call %(phone)s", {"phone": "138 1234 5678"})
    logger.error("contact +86 138-1234-5678 / li.ming@example.cn on 2026-12-10, paid 10000.00 CNY")
    try:
        raise ValueError(f"bad recipient {EMAIL}")
    except ValueError:
        logger.exception("send failed for %s", PHONE)
    logger.warning("two args %s %s for one: " + EMAIL, PHONE)  # malformed: emitted, masked, no error
    text = out.getvalue()
    assert "unformattable arguments" in text
    assert PHONE not in text and EMAIL not in text and "13812345678" not in text and "1234 5678" not in text
    assert "sms to ***5678, mail to l***@example.cn" in text
    assert "call ***5678" in text
    assert "contact ***5678 / l***@example.cn on 2026-12-10, paid 10000.00 CNY" in text
    assert "ValueError: bad recipient l***@example.cn" in text
    assert mask_personal_data("loan L-1234567890, run 12345678-1234-1234-1234-123456789012") == (
        "loan L-1234567890, run 12345678-1234-1234-1234-123456789012"
    )


def test_worker_main_installs_the_log_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    temporal_level = logging.getLogger("temporalio").level
    monkeypatch.setattr(sys, "argv", ["worker.py"])
    monkeypatch.setattr(worker.asyncio, "run", lambda coro: coro.close())
    extra = logging.StreamHandler(io.StringIO())
    root.addHandler(extra)  # basicConfig adds nothing while handlers exist; the filter still goes on
    try:
        worker.main()
        assert all(any(isinstance(f, MaskingFilter) for f in h.filters) for h in root.handlers)
    finally:
        root.removeHandler(extra)
        for h in root.handlers:
            for f in [f for f in h.filters if isinstance(f, MaskingFilter)]:
                h.removeFilter(f)
        logging.getLogger("temporalio").setLevel(temporal_level)
