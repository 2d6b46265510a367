"""The desk's users: made, listed and unlocked by `starter.py user add|list|unlock`, checked at
sign-in. Passwords are hashed with argon2id (`argon2-cffi`; a slow, memory-hard hash, because
people choose guessable passwords, unlike the API's random tokens) and never stored or logged.
Wrong passwords in a row lock the account (`models.lockout`, DESK_MAX_FAILURES and
DESK_LOCK_MINUTES)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from db import migrate
from db.desk_users import DeskUser
from db.store import make_engine
from models.lockout import LockoutPolicy, after_failure, locked

ROLES = ("collector", "supervisor")
LANGUAGES = ("zh", "en")
MIN_PASSWORD = 8
_HASHER = PasswordHasher()
_DUMMY = _HASHER.hash("not a password of anyone")
"""Checked against when the name is unknown, so that an unknown name takes as long as a wrong
password and sign-in does not tell which names exist."""


def _clean_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or any(c.isspace() or c in ",:" for c in name):
        raise ValueError("a user name is 1 to 64 characters without spaces, commas or colons")
    return name


def _clean_queues(queues: Iterable[str]) -> list[str]:
    cleaned = [q.strip() for q in queues if q.strip()]
    if any("," in q for q in cleaned):
        raise ValueError("a queue name cannot contain a comma")
    return cleaned


def create_user(
    database_url: str,
    name: str,
    role: str,
    password: str,
    *,
    queues: Iterable[str] = (),
    language: str = "zh",
) -> None:
    """Add a desk user. A collector needs at least one queue; a supervisor sees every queue and
    takes none. Raises ValueError (and adds nothing) for a bad name, role, language or queue, a
    password shorter than MIN_PASSWORD, or a name already taken. Brings the schema up to date."""
    name = _clean_name(name)
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}: one of {', '.join(LANGUAGES)}")
    queue_list = _clean_queues(queues)
    if role == "collector" and not queue_list:
        raise ValueError("a collector needs at least one --queue")
    if role == "supervisor" and queue_list:
        raise ValueError("a supervisor sees every queue: give no --queue")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
    migrate.upgrade(database_url)
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with Session(engine) as session:
            if session.exec(select(DeskUser).where(DeskUser.name == name)).first() is not None:
                raise ValueError(f"user {name!r} exists already")
            session.add(
                DeskUser(
                    name=name,
                    password_hash=_HASHER.hash(password),
                    role=role,
                    queues=",".join(queue_list),
                    language=language,
                )
            )
            session.commit()
    finally:
        engine.dispose()


def list_users(database_url: str) -> list[dict[str, Any]]:
    """Every desk user (never the password hash), by name."""
    migrate.upgrade(database_url)
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with Session(engine) as session:
            rows = session.exec(select(DeskUser).order_by(col(DeskUser.name))).all()
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    return [
        {
            "name": r.name,
            "role": r.role,
            "queues": r.queues,
            "language": r.language,
            "failures": r.failures,
            "locked_until": (
                r.locked_until.isoformat(timespec="seconds")
                if r.locked_until is not None and locked(r.locked_until, now)
                else ""
            ),
            "created_at": r.created_at.isoformat(timespec="seconds"),
        }
        for r in rows
    ]


def unlock_user(database_url: str, name: str) -> bool:
    """Lift a lock-out and clear the failure count; False if there is no such user. Also ends
    the user's sessions (an operator unlocking after an attack wants a fresh sign-in)."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with Session(engine) as session:
            row = session.exec(select(DeskUser).where(DeskUser.name == name.strip())).first()
            if row is None:
                return False
            row.failures, row.locked_until = 0, None
            row.session_epoch += 1
            session.add(row)
            session.commit()
            return True
    finally:
        engine.dispose()


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: the user, or why not (`wrong`: name or password, not saying
    which; `locked`: until `locked_until`)."""

    user: DeskUser | None = None
    refused: str = ""
    locked_until: datetime | None = None


def sign_in(engine: Engine, name: str, password: str, now: datetime, policy: LockoutPolicy) -> SignIn:
    """Check a name and password at `now`. A locked account is refused without checking the
    password (so guessing goes no further while it is locked); a wrong password counts towards
    the lock-out; a right one resets the count. One transaction, the row locked for update
    (PostgreSQL), so parallel guesses all count."""
    with Session(engine) as session:
        row = session.exec(select(DeskUser).where(DeskUser.name == name.strip()).with_for_update()).first()
        if row is None:
            _verify(_DUMMY, password)
            return SignIn(refused="wrong")
        if locked(row.locked_until, now):
            return SignIn(refused="locked", locked_until=row.locked_until)
        if not _verify(row.password_hash, password):
            row.failures, row.locked_until = after_failure(row.failures, row.locked_until, now, policy)
            session.add(row)
            session.commit()
            if locked(row.locked_until, now):
                return SignIn(refused="locked", locked_until=row.locked_until)
            return SignIn(refused="wrong")
        if _HASHER.check_needs_rehash(row.password_hash):
            row.password_hash = _HASHER.hash(password)
        row.failures, row.locked_until, row.last_sign_in = 0, None, now
        session.add(row)
        session.commit()
        session.refresh(row)
        session.expunge(row)
        return SignIn(user=row)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def find_user(engine: Engine, name: str) -> DeskUser | None:
    """The user row by name (a session's holder, read on each request: a removed role or queue
    takes effect at once)."""
    with Session(engine) as session:
        row = session.exec(select(DeskUser).where(DeskUser.name == name)).first()
        if row is not None:
            session.expunge(row)
        return row


def set_language(engine: Engine, name: str, language: str) -> None:
    """The user's choice of language for the desk's pages (kept for their next sign-in)."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}: one of {', '.join(LANGUAGES)}")
    with Session(engine) as session:
        row = session.exec(select(DeskUser).where(DeskUser.name == name)).first()
        if row is not None:
            row.language = language
            session.add(row)
            session.commit()


def set_password(database_url: str, name: str, password: str) -> bool:
    """Give a user a new password (and end their sessions); False if there is no such user."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with Session(engine) as session:
            row = session.exec(select(DeskUser).where(DeskUser.name == name.strip())).first()
            if row is None:
                return False
            row.password_hash = _HASHER.hash(password)
            row.failures, row.locked_until = 0, None
            row.session_epoch += 1
            session.add(row)
            session.commit()
            return True
    finally:
        engine.dispose()
