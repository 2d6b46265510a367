"""The tests' own layout: every test module sits in one of the folders (unit, db, workflows,
system, replay, api, desk), none directly in tests/, and no module under tests/ imports a test module or a
conftest.py. What tests share lives in tests/helpers.py (and tests/pg.py); fixtures come from
the conftest.py files by injection."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import TESTS

FOLDERS = {"unit", "db", "workflows", "system", "replay", "api", "desk"}


def python_files() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def package_of(path: Path) -> tuple[str, ...]:
    return path.relative_to(TESTS.parent).with_suffix("").parts[:-1]


def imported_modules(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, dotted name) of each module `source` imports, `from a import b` giving both `a` and
    `a.b` (b may be a module); relative imports resolved against `package`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def forbidden(module: str) -> bool:
    """A test module (`tests.test_x`, `tests.<folder>.test_x`) or a conftest."""
    parts = module.split(".")
    return (
        parts[0] == "tests"
        and len(parts) > 1
        and (parts[-1].startswith("test_") or parts[-1] == "conftest" or any(p.startswith("test_") for p in parts[1:]))
    )


def test_no_test_module_sits_directly_in_tests() -> None:
    assert sorted(p.name for p in TESTS.glob("test_*.py")) == []


def test_every_test_module_sits_in_one_of_the_folders() -> None:
    misplaced = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("test_*.py")
        if p.parent.name not in FOLDERS or p.parent.parent != TESTS
    ]
    assert misplaced == []
    assert {p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == FOLDERS


def test_nothing_under_tests_imports_a_test_module_or_a_conftest() -> None:
    offending = [
        f"{path.relative_to(TESTS.parent)}:{line}: {module}"
        for path in python_files()
        for line, module in imported_modules(path.read_text(encoding="utf-8"), package_of(path))
        if forbidden(module)
    ]
    assert offending == [], "import what tests share from tests.helpers; take fixtures as arguments"


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from tests.test_replay import SINGLE_BATCH", True),
        ("from tests.workflows.test_ladder import EXPECTED_TIMELINE", True),
        ("import tests.db.test_locks", True),
        ("from tests.workflows import test_ladder", True),
        ("from tests.conftest import make_loan", True),
        ("from .test_ladder import EXPECTED_TIMELINE", True),
        ("from . import test_ladder", True),
        ("from tests.helpers import Harness, make_loan", False),
        ("from tests import pg", False),
        ("from models.schedule import local_date", False),
    ],
)
def test_the_import_check_catches_test_modules(source: str, bad: bool) -> None:
    """The check above, on a module of tests/workflows (where a relative import starts)."""
    modules = [m for _, m in imported_modules(source, package_of(TESTS / "workflows" / "probe.py"))]
    assert any(forbidden(m) for m in modules) is bad, modules
