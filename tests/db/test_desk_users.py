"""Desk users in the database (SQLite and PostgreSQL): the password is stored only as an argon2
hash; a right password signs in, a wrong or an unknown name is refused alike; five wrong ones
lock the account, and while locked even the right password is refused; an unlock lifts it;
bad input adds nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from db.desk_users import DeskUser
from desk.users import create_user, list_users, sign_in, unlock_user
from models.lockout import LockoutPolicy

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
POLICY = LockoutPolicy(max_failures=5, lock_minutes=15)


def test_a_user_signs_in_with_the_right_password_only(db_url: str, engine: Engine) -> None:
    create_user(db_url, "li.wei", "collector", "right-password", queues=["collectors"], language="en")
    with Session(engine) as session:
        row = session.exec(select(DeskUser).where(DeskUser.name == "li.wei")).one()
    assert row.password_hash.startswith("$argon2id$") and "right-password" not in row.password_hash
    assert row.queues == "collectors" and row.language == "en"

    ok = sign_in(engine, "li.wei", "right-password", NOW, POLICY)
    assert ok.user is not None and ok.user.role == "collector" and ok.refused == ""
    assert sign_in(engine, "li.wei", "wrong-password", NOW, POLICY).refused == "wrong"
    assert sign_in(engine, "nobody", "right-password", NOW, POLICY).refused == "wrong"


def test_five_wrong_passwords_lock_the_account_until_unlocked(db_url: str, engine: Engine) -> None:
    create_user(db_url, "wang.fang", "collector", "right-password", queues=["field-agents"])
    answers = [sign_in(engine, "wang.fang", f"guess-{n}", NOW, POLICY).refused for n in range(5)]
    assert answers == ["wrong", "wrong", "wrong", "wrong", "locked"]
    refused = sign_in(engine, "wang.fang", "right-password", NOW + timedelta(minutes=1), POLICY)
    assert refused.refused == "locked" and refused.locked_until == NOW + timedelta(minutes=15)

    later = sign_in(engine, "wang.fang", "right-password", NOW + timedelta(minutes=15), POLICY)
    assert later.user is not None

    for n in range(5):
        sign_in(engine, "wang.fang", f"guess-{n}", NOW + timedelta(minutes=20), POLICY)
    assert sign_in(engine, "wang.fang", "right-password", NOW + timedelta(minutes=21), POLICY).refused == "locked"
    assert unlock_user(db_url, "wang.fang")
    assert sign_in(engine, "wang.fang", "right-password", NOW + timedelta(minutes=21), POLICY).user is not None
    assert not unlock_user(db_url, "nobody")


@pytest.mark.parametrize(
    ("name", "role", "password", "queues", "language", "message"),
    [
        ("", "collector", "long-enough", ["q"], "zh", "user name"),
        ("a b", "collector", "long-enough", ["q"], "zh", "user name"),
        ("x", "platform", "long-enough", ["q"], "zh", "unknown role"),
        ("x", "collector", "long-enough", ["q"], "fr", "unknown language"),
        ("x", "collector", "long-enough", [], "zh", "at least one --queue"),
        ("x", "supervisor", "long-enough", ["q"], "zh", "give no --queue"),
        ("x", "collector", "short", ["q"], "zh", "at least 8"),
        ("x", "collector", "long-enough", ["a,b"], "zh", "comma"),
    ],
)
def test_bad_input_is_refused_and_adds_nothing(
    db_url: str, name: str, role: str, password: str, queues: list[str], language: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create_user(db_url, name, role, password, queues=queues, language=language)
    assert list_users(db_url) == []


def test_a_name_is_taken_once(db_url: str) -> None:
    create_user(db_url, "zhang.min", "supervisor", "right-password")
    with pytest.raises(ValueError, match="exists already"):
        create_user(db_url, "zhang.min", "collector", "other-password", queues=["q"])
    assert [(u["name"], u["role"]) for u in list_users(db_url)] == [("zhang.min", "supervisor")]
