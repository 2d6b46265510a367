"""The demo users `make run` prints: a collector of every queue the default strategy's calls and
visits go to, and a supervisor, each with a password made the first time and kept in
DESK_DEMO_FILE (var/desk-demo-users, mode 600) so that every later `make run` prints the same.
Only for `make run`: real users are made with `starter.py user add` and their passwords are
never written down."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from desk.users import create_user, list_users, set_password
from infra.loaders import load_policy
from models.requests import TaskKind

COLLECTOR = "demo.collector"
SUPERVISOR = "demo.supervisor"


def sample_queues(policies_dir: Path) -> list[str]:
    """The queues the default strategy's people tasks go to (calls, field visits)."""
    policy = load_policy("default", policies_dir)
    people = {TaskKind.call.value, TaskKind.field_visit.value}
    return sorted({step.queue for step in policy.ladder if str(step.action) in people})


def demo_users(database_url: str, path: Path, policies_dir: Path) -> dict[str, str]:
    """Name -> password of the demo collector and supervisor, made (or given a new password when
    the kept one is lost) as needed."""
    kept: dict[str, str] = {}
    if path.is_file():
        try:
            kept = {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
        except (ValueError, AttributeError):
            kept = {}
    existing = {u["name"] for u in list_users(database_url)}
    wanted = {COLLECTOR: ("collector", sample_queues(policies_dir)), SUPERVISOR: ("supervisor", [])}
    for name, (role, queues) in wanted.items():
        password = kept.get(name) or secrets.token_urlsafe(9)
        if name not in existing:
            create_user(database_url, name, role, password, queues=queues, language="zh")
        elif name not in kept:
            set_password(database_url, name, password)
        kept[name] = password
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return kept
