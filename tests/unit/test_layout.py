"""The folder rules (README: Layout) hold: the import contracts in pyproject.toml (`lint-imports`),
models/ importing only the standard library, pydantic and itself, every top-level module and
package importing on its own in a fresh interpreter (an import cycle used to break that), and
the workflows' activity stubs matching the activities the worker registers."""

from __future__ import annotations

import ast
import inspect
import pkgutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from temporalio import activity, workflow

from tests.helpers import ROOT

PACKAGES = ("models", "db", "infra", "workflows", "client", "activities", "ops", "api", "desk", "lab")
ENTRY_POINTS = ("worker", "starter", "config")
MODELS_MAY_IMPORT = {"pydantic", "models", "__future__"}


def test_the_import_contracts_hold() -> None:
    """`lint-imports` with the contracts of pyproject.toml: the layers (no cycle between top-level
    packages), only entry points, tests and bench import starter or worker, activities never import
    the CLI, the worker, workflows or ops, workflow code never reaches the database, activities or
    the client, models imports no project package and no I/O library."""
    linter = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, top-level name) of every absolute import in the file, at any depth (a function's
    imports count too); relative imports are models' own."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_models_import_only_the_standard_library_pydantic_and_models() -> None:
    """`models` is pure (no I/O, no framework): what import-linter cannot say ("only these external
    packages"), checked on the source."""
    allowed = MODELS_MAY_IMPORT | set(sys.stdlib_module_names)
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "models").rglob("*.py"))
        for line, name in imports_of(path)
        if name not in allowed
    ]
    assert not offending, "\n".join(offending)


def test_the_models_check_catches_a_third_party_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import json\nfrom pydantic import BaseModel\n\ndef f():\n    from jinja2 import Template\n")
    assert [name for _, name in imports_of(sample) if name not in MODELS_MAY_IMPORT | set(sys.stdlib_module_names)] == [
        "jinja2"
    ]


FILE_CALLS = {
    "open",
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "glob",
    "rglob",
    "iterdir",
    "is_file",
    "exists",
    "mkdir",
    "unlink",
}


def test_models_read_no_files() -> None:
    """No file access left in models/ (loaders live in infra.loaders and activities.linter)."""
    offending = []
    for path in sorted((ROOT / "models").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                if name in FILE_CALLS:
                    offending.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {name}")
    assert not offending, "\n".join(offending)


def modules_of(package: str) -> list[str]:
    path = ROOT / package
    return [package, *sorted(name for _, name, _ in pkgutil.walk_packages([str(path)], prefix=f"{package}."))]


def test_every_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    """Each entry point and package, first thing in a fresh interpreter, then every module of the
    package; and the modules that used to close the cycle (the scan's activity, workflow, client
    call and schedule) each first on their own."""
    scripts = {name: f"import {name}" for name in ENTRY_POINTS}
    scripts |= {package: "; ".join(f"import {module}" for module in modules_of(package)) for package in PACKAGES}
    scripts |= {
        module: f"import {module}"
        for module in (
            "activities.scan",
            "workflows.scan",
            "client.scan",
            "client.loans",
            "infra.schedules",
            "ops.sample",
            "workflows.registry",
            "workflows.legacy.collection_v1",
        )
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, script in scripts.items()
    }
    failed = {}
    for name, process in running.items():
        output, _ = process.communicate(timeout=300)
        if process.returncode != 0:
            failed[name] = output[-2000:]
    assert not failed, "\n\n".join(f"{name}:\n{output}" for name, output in failed.items())


def test_the_workflows_activity_stubs_match_the_registered_activities() -> None:
    """`workflows.calls` declares by name what the workflows call; each name is an activity the
    worker registers, with the same argument and result types."""
    from activities.effects import EffectActivities
    from activities.guard import GuardActivities
    from activities.scan import ScanActivities
    from activities.start import StartActivities
    from workflows import calls

    implementations = {
        activity_name(method): method
        for cls in (StartActivities, GuardActivities, EffectActivities, ScanActivities)
        for _, method in inspect.getmembers(cls, inspect.isfunction)
        if activity_name(method) is not None
    }
    for stub in calls.STUBS:
        name = activity_name(stub)
        assert name in implementations, f"no activity named {name!r}"
        real = typing.get_type_hints(implementations[name])
        assert typing.get_type_hints(stub) == {**real}, name
        assert inspect.iscoroutinefunction(stub) == inspect.iscoroutinefunction(implementations[name]), name


def activity_name(fn: object) -> str | None:
    defn = getattr(fn, "__temporal_activity_definition", None)
    return defn.name if defn is not None else None


def test_the_schedule_names_the_scan_workflow_by_its_type() -> None:
    from infra.options import SCAN_WORKFLOW
    from workflows.scan import OverdueScanWorkflow

    defn = workflow._Definition.must_from_class(OverdueScanWorkflow)
    assert defn.name == SCAN_WORKFLOW


def test_the_config_shim_re_exports_the_infra_objects() -> None:
    """`config` is kept for outside callers only: every name is infra's own object."""
    import config
    from infra import logs, process, settings, temporal

    for name in config.__all__:
        owner = next(m for m in (settings, temporal, logs, process) if hasattr(m, name))
        assert getattr(config, name) is getattr(owner, name), name
    assert config.DATA_CONVERTER is temporal.data_converter()


@pytest.mark.parametrize(
    "name",
    [
        "connect",
        "start_collection",
        "hand_over",
        "register_payment",
        "send_bank_payment",
        "server_now",
        "get_status",
        "wait_quiet",
        "list_loans",
        "roll_over",
        "portfolio_stats",
        "scan_overdue",
        "promise_to_pay",
        "propose_plan",
        "offer_settlement",
        "report_hardship",
        "review_hardship",
        "raise_dispute",
        "resolve_dispute",
        "stop_collection",
        "opt_out",
        "request_agency_contact",
        "report_task_outcome",
        "report_agency",
        "report_court",
        "LoanNotFound",
        "RequestRejected",
        "RequestPending",
        "StartOutcome",
    ],
)
def test_starter_re_exports_the_client_api(name: str) -> None:
    import client
    import starter

    assert getattr(starter, name) is getattr(client, name)


def test_starter_keeps_the_operator_tools() -> None:
    import ops.audit
    import ops.sample
    import starter

    assert starter.export_audit is ops.audit.export_audit
    assert starter.load_sample_portfolio is ops.sample.load_sample_portfolio
    assert starter.AUDIT_COLUMNS == ops.audit.AUDIT_COLUMNS


def test_no_activity_stub_is_registered_by_the_worker() -> None:
    """The stubs raise if run: the worker registers the implementations only."""
    import worker
    from workflows import calls

    source = inspect.getsource(worker.create_worker)
    assert "calls." not in source
    assert all(activity._Definition.from_callable(stub) is not None for stub in calls.STUBS)
