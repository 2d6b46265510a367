"""Kinds are enums: their stored form is unchanged (the enum's value, as the strings were, so
recorded histories and policy files read as before), and a kind a branch does not handle fails
loudly instead of falling through to another branch."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from models.fees import fee_for_period
from models.lifecycle import contacts, due
from models.loan import Balance
from models.policy import Action, FeeKind, LateFee
from models.requests import TaskKind
from models.schedule import ActionKind, PlannedAction
from models.status import ContactKind, DeferredContact, OpenTask

AT = datetime(2026, 12, 1, tzinfo=UTC)


def test_kinds_are_stored_as_the_strings_they_were() -> None:
    assert PlannedAction(key="fee:1", dpd=7, kind="fee", period=1).model_dump(mode="json")["kind"] == "fee"
    assert PlannedAction(key="fee:1", dpd=7, kind="fee", period=1).kind is ActionKind.fee
    assert LateFee().model_dump(mode="json")["kind"] == "percent" and LateFee().kind is FeeKind.percent
    contact = DeferredContact(key="k", kind="message", purpose="escalation", channel="sms", at=AT)
    assert contact.kind is ContactKind.message
    assert DeferredContact.model_validate_json(contact.model_dump_json()) == contact
    assert contact.model_dump(mode="json")["kind"] == "message"
    assert [str(k) for k in ActionKind] == ["stage", "fee", "step", "write_off"]  # also the same-day order


def unknown(model: Any, **fields: Any) -> Any:
    """An instance whose kind is none of the enum's (only possible by skipping validation)."""
    return model.model_construct(**fields, kind="unheard-of")


def test_an_unknown_fee_kind_fails() -> None:
    rule = unknown(LateFee, amount=Decimal(1), rate=Decimal("0.05"), cap_ratio=Decimal("0.25"))
    balance = Balance(principal=Decimal(100), interest=Decimal(0), fees=Decimal(0), penalties=Decimal(0))
    with pytest.raises(ValueError, match="unheard-of"):
        fee_for_period(rule, balance, Decimal(0), Decimal(100), "CNY")


def test_an_unknown_plan_action_kind_fails() -> None:
    action = unknown(PlannedAction, key="x", dpd=1)
    with pytest.raises(ValueError, match="unheard-of"):
        due._run_planned(None, action)  # type: ignore[arg-type]  # no step: the unknown kind fails first


def test_an_unknown_due_item_kind_fails() -> None:
    step = SimpleNamespace(s=SimpleNamespace(), plan=[])
    with pytest.raises(ValueError, match="unheard-of"):
        # a stand-in step and a kind no branch knows: what is tested
        due.run_item(step, due.Due(at=AT, kind="unheard-of", label="?"))  # type: ignore[arg-type]


def test_an_unknown_contact_kind_fails() -> None:
    pending = unknown(DeferredContact, key="k", purpose="escalation", channel="sms", at=AT)
    with pytest.raises(ValueError, match="unheard-of"):
        contacts._subject(pending)
    with pytest.raises(ValueError, match="unheard-of"):
        contacts._make_now(None, pending)  # type: ignore[arg-type]  # no step: the unknown kind fails first


def test_task_kinds_are_stored_as_the_strings_they_were() -> None:
    task = OpenTask(task_id="t", kind="call", step_key="call_1", attempt=1, queue="q", deadline=AT)
    assert task.kind is TaskKind.call and task.model_dump(mode="json")["kind"] == "call"
    assert f"{task.kind}_outcome" == "call_outcome"  # the timeline's action names stay as they were
    assert OpenTask.model_validate_json(task.model_dump_json()) == task
    assert [TaskKind.of(Action.call), TaskKind.of(Action.field_visit)] == ["call", "field_visit"]
    assert [TaskKind.call.channel, TaskKind.field_visit.channel] == ["phone", "visit"]


def test_a_task_kind_that_is_no_contact_fails() -> None:
    with pytest.raises(ValueError, match="creates no task"):
        TaskKind.of(Action.message)
    with pytest.raises(ValueError, match="not a contact"):
        _ = TaskKind.hardship_review.channel
    with pytest.raises(ValueError):
        OpenTask(task_id="t", kind="phone_call", step_key="s", attempt=1, queue="q", deadline=AT)
