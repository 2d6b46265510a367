"""The desk's pure pieces: the policy's limits a form shows (`models.offer_limits`), the contact
budget left and how far back the guard looks (`models.conduct.budget`, `history_horizon`), the
lock-out rule's settings, and that every word a desk template asks for is in both languages."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from desk.i18n import TEXT, translator
from desk.loan import CHANNELS, OUTCOMES
from desk.state import HERE
from infra.loaders import load_policy, load_ruleset
from infra.settings import ROOT
from models import Stage
from models.conduct import PastContact, budget, history_horizon
from models.offer_limits import offer_limits
from models.requests import TaskKind

FORMS_VALUES = ("weekly", "biweekly", "monthly", "bankruptcy", "death", "cease_contact", "hardship", "dispute")
TODAY = date(2026, 12, 8)
NOW = datetime(2026, 12, 8, 3, 0, tzinfo=UTC)


def test_the_limits_are_the_policys_own_at_the_loans_stage() -> None:
    policy = load_policy("default", ROOT / "policies")
    early = offer_limits(policy, "early", Decimal("10600.00"), "CNY", TODAY)
    assert early.promise_latest == TODAY + timedelta(days=policy.promise.max_days)
    assert early.plan_max_instalments == policy.plan.max_instalments
    assert early.plan_min_instalment == policy.plan.min_instalment
    assert early.plan_first_due_latest == TODAY + timedelta(days=policy.plan.max_first_due_days)
    assert (early.settlement_max_discount, early.settlement_min_amount) == (Decimal(0), Decimal("10600.00"))
    late = offer_limits(policy, "late", Decimal("10600.01"), "CNY", TODAY)
    share = policy.settlement.max_discount["late"]
    assert late.settlement_max_discount == share
    assert late.settlement_min_amount >= Decimal("10600.01") * (1 - share)  # rounded up: never below the limit
    assert late.settlement_min_amount - Decimal("10600.01") * (1 - share) < Decimal("0.01")


def test_the_budget_counts_each_caps_window_and_reports_the_tightest() -> None:
    rules = load_ruleset("cn", ROOT / "rulesets")
    calls = next(c for c in rules.caps if "phone" in c.channels)
    history = [PastContact(channel="phone", at=NOW - timedelta(hours=h)) for h in (1, 2)]
    history.append(PastContact(channel="phone", at=NOW - timedelta(hours=calls.window_hours + 1)))  # outside
    left = {b.channel: b for b in budget(NOW, history, rules)}
    expected = calls.max - 2 if calls.count == "attempts" else calls.max
    assert left["phone"].left == max(expected, 0) and left["phone"].rule
    assert all(b.left is None or b.left >= 0 for b in left.values())
    assert history_horizon(rules) >= timedelta(hours=max(c.window_hours for c in rules.caps))


def test_every_word_the_templates_ask_for_is_in_both_languages() -> None:
    asked = set()
    for template in (HERE / "templates").glob("*.html"):
        asked |= set(re.findall(r"\bt\('([a-z_0-9]+)'\)", template.read_text(encoding="utf-8")))
    missing = sorted(k for k in asked if k not in TEXT)
    assert missing == []
    empty = sorted(k for k, (en, zh) in TEXT.items() if not zh or (not en and k != "pages_end"))
    assert empty == []
    values = [*(s.value for s in Stage), *(k.value for k in TaskKind), *OUTCOMES, *CHANNELS, *FORMS_VALUES]
    assert sorted(v for v in values if v not in TEXT) == []  # domain values the pages show in words
    assert translator("zh")("take_next") == "领取下一个任务" and translator("en")("take_next") == "Take next task"
    assert translator("en")("no such key") == "no such key"
