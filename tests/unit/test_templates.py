"""Every shipped template renders in both languages; every policy step has its templates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.linter import purpose_of
from activities.rendering import Renderer, mask
from infra.loaders import load_policy
from infra.settings import settings
from models.context import template_context
from models.loan import Stage
from models.policy import Action
from models.status import CollectionState
from tests.helpers import make_loan

TEMPLATES = settings().templates_dir
SHIPPED = sorted({p.name for p in TEMPLATES.glob("*/*.j2")})


def full_context() -> dict[str, str]:
    policy = load_policy("default", settings().policies_dir)
    loan = make_loan("L-TPL", dpd=31)
    state = CollectionState(loan=loan, policy=policy, started_at=datetime.now(UTC), balance=loan.balance())
    return template_context(
        state,
        datetime.now(UTC),
        Stage.middle,
        deadline_days=15,
        attempt="1",
        agency="default-agency",
        recall_date="2027-01-01",
        reason="lost job",
        evidence_ref="DOC-1",
        instalment_number="2",
        instalment_amount="883.33",
        instalment_due="2027-02-01",
    )


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("name", SHIPPED)
def test_every_template_renders_with_the_loan_figures(name: str, language: str) -> None:
    template, kind, _ = name.rsplit(".", 2)
    subject, body = Renderer(TEMPLATES).render(template, kind, language, full_context())
    if purpose_of((TEMPLATES / language / name).read_text(encoding="utf-8")) == "third_party":
        # a message to someone else, only to find the borrower: no debt, no lender, no loan
        assert "L-TPL" not in body and "10,600.00" not in body and "Example Lending" not in body
        return
    assert "L-TPL" in body or "L-TPL" in subject
    assert "10,600.00" in body or template in ("paid_confirmation", "settled_confirmation", "plan_reminder")
    if kind in ("sms", "email", "letter"):
        assert "Example Lending Co." in body or "Example Lending Co." in subject
    if kind == "email":
        assert subject


def test_every_policy_step_has_templates_in_both_languages() -> None:
    kinds = {
        Action.call: ["task"],
        Action.field_visit: ["task"],
        Action.agency: ["document"],
        Action.litigation: ["document"],
    }
    for policy_file in settings().policies_dir.glob("*.toml"):
        policy = load_policy(policy_file.stem, policy_file.parent)
        for step in policy.ladder:
            for kind in step.channels or kinds[step.action]:
                for language in ("zh", "en"):
                    assert (TEMPLATES / language / f"{step.template}.{kind}.j2").is_file(), (policy.name, step.key)


def test_missing_template_or_figure_is_a_permanent_error(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "x.sms.j2").write_text("{{ amount_due }} {{ nope }}")
    renderer = Renderer(tmp_path)
    with pytest.raises(ApplicationError, match="nope") as err:
        renderer.render("x", "sms", "en", {"amount_due": "1"})
    assert err.value.non_retryable
    with pytest.raises(ApplicationError, match="not found"):
        renderer.render("y", "sms", "en", {})


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+8613812345678", "***5678"),
        ("li.ming@example.cn", "l***@example.cn"),
        ("上海市浦东新区", "上海市***"),
        ("", ""),
    ],
)
def test_mask_hides_personal_data(raw: str, masked: str) -> None:
    assert mask(raw) == masked
