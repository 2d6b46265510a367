"""Unit tests of the pure domain package `models/` (no Temporal server, no database, no clock).

Sections follow the modules: money, loan, allocation, fees, schedule, policy, payment, context.
All dates and instants are fixed so every expectation is exact.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from infra.loaders import load_policy
from models.allocation import Allocation, allocate
from models.context import template_context
from models.fees import fee_cap, fee_for_period
from models.loan import COMPONENTS, Balance, Borrower, OverdueLoan, Stage
from models.money import ZERO, Amount, Currency, minor_units, quantize
from models.payment import Payment, PaymentRejected, check_payment
from models.policy import (
    LateFee,
    Policy,
    PolicyError,
    parse_policy,
    policy_path,
)
from models.schedule import (
    PlannedAction,
    action_time,
    at_local,
    build_plan,
    catch_up,
    days_past_due,
    fee_dpds,
    local_date,
    next_contact_moment,
    stage_for_dpd,
    step_applies,
)
from models.status import CollectionState
from tests.helpers import ROOT, TEST_POLICIES

POLICIES = ROOT / "policies"

SHANGHAI = "Asia/Shanghai"
NEW_YORK = "America/New_York"
UTC = UTC
DUE = date(2024, 3, 1)
D = Decimal


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def borrower(tz: str = SHANGHAI) -> Borrower:
    return Borrower(borrower_id="B-1", name="李明", address="上海市浦东新区世纪大道1号", timezone=tz)


def loan(
    *,
    principal: str = "10000.00",
    interest: str = "500.00",
    fees: str = "100.00",
    penalties: str = "0",
    currency: str = "CNY",
    due_date: date = DUE,
    tz: str = SHANGHAI,
    product: str = "consumer",
) -> OverdueLoan:
    """A loan with fixed figures and a fixed due date (unlike tests.helpers.make_loan)."""
    return OverdueLoan(
        loan_id="L-1",
        borrower=borrower(tz),
        currency=currency,
        principal=D(principal),
        interest=D(interest),
        fees=D(fees),
        penalties=D(penalties),
        due_date=due_date,
        product=product,
    )


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return load_policy("default", POLICIES)


def loan_with(field: str, value: str) -> OverdueLoan:
    """`loan()` with one of its amounts (principal, interest, fees, penalties) set to `value`."""
    assert field in ("principal", "interest", "fees", "penalties")
    amounts = {"principal": "10000.00", "interest": "500.00", "fees": "100.00", "penalties": "0", field: value}
    return loan(
        principal=amounts["principal"],
        interest=amounts["interest"],
        fees=amounts["fees"],
        penalties=amounts["penalties"],
    )


def keys(plan: list[PlannedAction]) -> list[str]:
    return [a.key for a in plan]


def error_text(exc: pytest.ExceptionInfo[BaseException]) -> str:
    return str(exc.value)


# ---------------------------------------------------------------------------------------------
# money
# ---------------------------------------------------------------------------------------------


class TestMoney:
    """quantize rounds half-up to the currency's minor unit; currency codes and floats are checked."""

    @pytest.mark.parametrize(
        ("amount", "currency", "expected"),
        [
            ("2.345", "CNY", "2.35"),
            ("2.344", "CNY", "2.34"),
            ("0.125", "CNY", "0.13"),  # half-up, not banker's rounding (which gives 0.12)
            ("-2.345", "CNY", "-2.35"),
            ("7", "CNY", "7.00"),
            ("1234.5", "JPY", "1235"),
            ("1234.4", "JPY", "1234"),
            ("2.5", "JPY", "3"),
            ("1.2345", "KWD", "1.235"),
            ("9.995", "EUR", "10.00"),
        ],
    )
    def test_quantize_half_up(self, amount: str, currency: str, expected: str) -> None:
        result = quantize(D(amount), currency)
        assert result == D(expected)
        assert str(result) == expected  # exponent too, not just the value

    def test_minor_units(self) -> None:
        assert minor_units("CNY") == 2
        assert minor_units("JPY") == 0
        assert minor_units("KWD") == 3
        assert minor_units("XYZ") == 2  # unlisted: two decimals

    @pytest.mark.parametrize("code", ["CNY", "USD", "JPY"])
    def test_good_currency(self, code: str) -> None:
        assert TypeAdapter(Currency).validate_python(code) == code

    @pytest.mark.parametrize("code", ["cny", "Cny", "CN", "CNYY", "C1Y", "", "US$"])
    def test_bad_currency(self, code: str) -> None:
        with pytest.raises(ValidationError, match="currency must be an ISO 4217 code like 'CNY'"):
            TypeAdapter(Currency).validate_python(code)

    def test_non_ascii_currency_rejected(self) -> None:
        with pytest.raises(ValidationError):
            TypeAdapter(Currency).validate_python("ÄÖÜ")

    def test_amount_accepts_decimal_string_and_int(self) -> None:
        adapter = TypeAdapter(Amount)
        assert adapter.validate_python("12.30") == D("12.30")
        assert adapter.validate_python(12) == D(12)
        assert adapter.validate_python(D("0.01")) == D("0.01")

    @pytest.mark.parametrize("value", [12.3, 100.0])
    def test_amount_rejects_float(self, value: float) -> None:
        with pytest.raises(ValidationError, match="never float"):
            TypeAdapter(Amount).validate_python(value)


# ---------------------------------------------------------------------------------------------
# loan: Borrower, OverdueLoan, Balance, Stage
# ---------------------------------------------------------------------------------------------


class TestBorrower:
    """Borrower validation: IANA zone, language, required fields; immutability."""

    @pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "../etc/passwd", "/etc/localtime"])
    def test_unknown_zone_rejected(self, tz: str) -> None:
        with pytest.raises(ValidationError, match=f"unknown IANA time zone {tz!r}"):
            Borrower(borrower_id="B", name="N", timezone=tz)

    def test_known_zone_and_defaults(self) -> None:
        b = Borrower(borrower_id="B", name="N", timezone=NEW_YORK)
        assert b.timezone == NEW_YORK
        assert Borrower(borrower_id="B", name="N").timezone == SHANGHAI
        assert Borrower(borrower_id="B", name="N").language == "zh"

    def test_unknown_language_rejected(self) -> None:
        with pytest.raises(ValidationError, match="language"):
            Borrower(borrower_id="B", name="N", language="fr")

    @pytest.mark.parametrize("field", ["borrower_id", "name"])
    def test_empty_ids_rejected(self, field: str) -> None:
        data = {"borrower_id": "B", "name": "N", field: ""}
        with pytest.raises(ValidationError, match=field):
            Borrower(**data)

    def test_frozen(self) -> None:
        b = borrower()
        with pytest.raises(ValidationError, match="frozen"):
            b.name = "other"  # type: ignore[misc]  # the frozen model refuses it: what is tested


class TestOverdueLoan:
    """Amounts must be non-negative Decimals with the currency's decimals, and owe something."""

    def test_valid_loan_and_balance(self) -> None:
        ln = loan(penalties="25.00")
        bal = ln.balance()
        assert bal == Balance(principal=D("10000.00"), interest=D("500.00"), fees=D("100.00"), penalties=D("25.00"))
        assert bal.total == D("10625.00")

    @pytest.mark.parametrize("field", ["principal", "interest", "fees", "penalties"])
    def test_negative_amount_rejected(self, field: str) -> None:
        with pytest.raises(ValidationError, match=f"{field} must not be negative"):
            loan_with(field, "-0.01")

    @pytest.mark.parametrize("field", ["principal", "interest", "fees", "penalties"])
    def test_too_many_decimals_rejected(self, field: str) -> None:
        with pytest.raises(ValidationError, match=f"{field} has more decimals than CNY allows"):
            loan_with(field, "1.001")

    def test_jpy_has_no_decimals(self) -> None:
        with pytest.raises(ValidationError, match="principal has more decimals than JPY allows"):
            loan(currency="JPY", principal="100000.5", interest="0", fees="0")
        ok = loan(currency="JPY", principal="100000", interest="0", fees="0")
        assert ok.principal == D("100000")

    def test_fewer_decimals_than_allowed_is_fine(self) -> None:
        assert loan(principal="10000.5").principal == D("10000.5")

    def test_all_zero_rejected(self) -> None:
        with pytest.raises(ValidationError, match="an overdue loan must owe something"):
            loan(principal="0", interest="0", fees="0", penalties="0")

    def test_only_fees_owed_is_fine(self) -> None:
        assert loan(principal="0", interest="0", fees="5.00").balance().total == D("5.00")

    @pytest.mark.parametrize("value", [100.5, 100.0])
    def test_float_rejected(self, value: float) -> None:
        with pytest.raises(ValidationError, match="never float"):
            OverdueLoan(loan_id="L", borrower=borrower(), currency="CNY", principal=value, due_date=DUE)

    def test_float_rejected_from_json(self) -> None:
        raw = (
            '{"loan_id": "L", "borrower": {"borrower_id": "B", "name": "N"}, "currency": "CNY",'
            ' "principal": 100.5, "due_date": "2024-03-01"}'
        )
        with pytest.raises(ValidationError, match="never float"):
            OverdueLoan.model_validate_json(raw)
        assert OverdueLoan.model_validate_json(raw.replace("100.5", '"100.50"')).principal == D("100.50")

    @pytest.mark.parametrize("code", ["cny", "CNYX", "12A"])
    def test_bad_currency_rejected(self, code: str) -> None:
        with pytest.raises(ValidationError, match="ISO 4217"):
            loan(currency=code)

    @pytest.mark.parametrize("value", ["NaN", "Infinity"])
    def test_non_finite_rejected(self, value: str) -> None:
        with pytest.raises(ValidationError, match="finite"):
            loan(principal=value)

    def test_huge_amount_is_a_validation_error(self) -> None:
        with pytest.raises(ValidationError, match="out of range"):
            loan(principal="1" + "0" * 30)

    @pytest.mark.parametrize("loan_id", ["", "has space", "a/b"])
    def test_bad_loan_id_rejected(self, loan_id: str) -> None:
        with pytest.raises(ValidationError, match="loan_id"):
            OverdueLoan(loan_id=loan_id, borrower=borrower(), currency="CNY", principal=D("1"), due_date=DUE)


class TestBalanceAndStage:
    """Balance.total is derived; Stage.is_final separates DPD bands from endings."""

    def test_total(self) -> None:
        bal = Balance(principal=D("1000.00"), interest=D("100.00"), fees=D("50.00"), penalties=D("20.00"))
        assert bal.total == D("1170.00")
        assert Balance().total == ZERO

    def test_total_follows_with_component(self) -> None:
        bal = Balance(principal=D("1000.00"), interest=D("100.00"))
        changed = bal.with_component("interest", D("40.00"))
        assert changed.total == D("1040.00")
        assert bal.interest == D("100.00")  # the original is untouched
        assert changed.component("interest") == D("40.00")

    def test_total_in_json_is_a_string(self) -> None:
        dumped = Balance(principal=D("10000.00"), fees=D("1.50")).model_dump(mode="json")
        assert dumped["total"] == "10001.50"
        assert dumped["principal"] == "10000.00"

    def test_components_order(self) -> None:
        assert COMPONENTS == ("penalties", "fees", "interest", "principal")

    def test_is_final(self) -> None:
        assert {s for s in Stage if not s.is_final} == {Stage.early, Stage.middle, Stage.late}
        assert Stage.written_off.is_final and Stage.paid.is_final and Stage.closed.is_final


# ---------------------------------------------------------------------------------------------
# allocation
# ---------------------------------------------------------------------------------------------


class TestAllocation:
    """allocate splits a payment over the components in order; any excess is `unapplied`."""

    BAL = Balance(principal=D("1000.00"), interest=D("100.00"), fees=D("50.00"), penalties=D("20.00"))

    def test_default_order_penalties_fees_interest_principal(self) -> None:
        split, left = allocate(D("100.00"), self.BAL, list(COMPONENTS))
        assert split == Allocation(
            penalties=D("20.00"), fees=D("50.00"), interest=D("30.00"), principal=D("0"), unapplied=D("0")
        )
        assert left == Balance(principal=D("1000.00"), interest=D("70.00"), fees=D("0"), penalties=D("0"))
        assert left.total == D("1070.00")
        assert split.applied() == D("100.00")

    def test_custom_order(self) -> None:
        split, left = allocate(D("1050.00"), self.BAL, ["principal", "fees", "interest", "penalties"])
        assert (split.principal, split.fees, split.interest, split.penalties) == (
            D("1000.00"),
            D("50.00"),
            D("0"),
            D("0"),
        )
        assert split.unapplied == ZERO
        assert left == Balance(principal=D("0"), interest=D("100.00"), fees=D("0"), penalties=D("20.00"))

    def test_partial_payment_within_first_component(self) -> None:
        split, left = allocate(D("5.55"), self.BAL, list(COMPONENTS))
        assert split.penalties == D("5.55")
        assert split.fees == split.interest == split.principal == ZERO
        assert left.penalties == D("14.45")
        assert left.total == D("1164.45")

    def test_exact_payment_leaves_zero(self) -> None:
        split, left = allocate(D("1170.00"), self.BAL, list(COMPONENTS))
        assert left.total == ZERO
        assert all(left.component(name) == ZERO for name in COMPONENTS)
        assert split.unapplied == ZERO
        assert split.applied() == D("1170.00")

    def test_overpayment_goes_to_unapplied(self) -> None:
        split, left = allocate(D("1200.00"), self.BAL, list(COMPONENTS))
        assert split.unapplied == D("30.00")
        assert split.applied() == D("1170.00")
        assert left.total == ZERO

    def test_empty_components_are_skipped(self) -> None:
        bal = Balance(principal=D("300.00"), interest=D("0"), fees=D("0"), penalties=D("0"))
        split, left = allocate(D("100.00"), bal, list(COMPONENTS))
        assert split.principal == D("100.00")
        assert left == Balance(principal=D("200.00"))


# ---------------------------------------------------------------------------------------------
# fees
# ---------------------------------------------------------------------------------------------


class TestFees:
    """fee_for_period: percent of principal+interest or flat, capped at a share of the principal."""

    PERCENT = LateFee()  # 5% every 30 days, cap 25% of the original principal
    BAL = Balance(principal=D("10000.00"), interest=D("500.00"), fees=D("100.00"), penalties=D("0"))

    def test_defaults(self) -> None:
        assert (self.PERCENT.kind, self.PERCENT.rate, self.PERCENT.cap_ratio) == ("percent", D("0.05"), D("0.25"))
        assert self.PERCENT.first_dpd == 7

    def test_percent_of_principal_and_interest(self) -> None:
        assert fee_for_period(self.PERCENT, self.BAL, ZERO, D("10000.00"), "CNY") == D("525.00")

    def test_percent_ignores_fees_and_penalties(self) -> None:
        bal = Balance(principal=D("1000.00"), interest=D("0"), fees=D("999.00"), penalties=D("999.00"))
        assert fee_for_period(self.PERCENT, bal, ZERO, D("100000.00"), "CNY") == D("50.00")

    def test_percent_on_nothing_overdue_is_zero(self) -> None:
        bal = Balance(fees=D("10.00"))
        assert fee_for_period(self.PERCENT, bal, ZERO, D("10000.00"), "CNY") == ZERO

    def test_cap_cuts_the_crossing_period_then_zero(self) -> None:
        posted: list[Decimal] = []
        total = ZERO
        for _ in range(6):
            fee = fee_for_period(self.PERCENT, self.BAL, total, D("10000.00"), "CNY")
            posted.append(fee)
            total += fee
        assert posted == [D("525.00")] * 4 + [D("400.00"), D("0")]
        assert total == D("2500.00") == fee_cap(self.PERCENT, D("10000.00"), "CNY")

    def test_over_cap_never_negative(self) -> None:
        assert fee_for_period(self.PERCENT, self.BAL, D("3000.00"), D("10000.00"), "CNY") == ZERO

    def test_cap_uses_original_principal_not_current(self) -> None:
        small_now = Balance(principal=D("100.00"))
        # 5% of 100 = 5.00; room under a cap of 25% of 10000 is plenty
        assert fee_for_period(self.PERCENT, small_now, D("2490.00"), D("10000.00"), "CNY") == D("5.00")
        assert fee_for_period(self.PERCENT, small_now, D("2498.00"), D("10000.00"), "CNY") == D("2.00")

    def test_flat_fee(self) -> None:
        rule = LateFee(kind="flat", amount=D("50"))
        assert fee_for_period(rule, self.BAL, ZERO, D("10000.00"), "CNY") == D("50.00")
        # flat fees do not depend on the balance
        assert fee_for_period(rule, Balance(principal=D("1.00")), ZERO, D("10000.00"), "CNY") == D("50.00")

    def test_flat_fee_cut_by_cap(self) -> None:
        rule = LateFee(kind="flat", amount=D("50"), cap_ratio=D("0.10"))
        assert fee_cap(rule, D("300.00"), "CNY") == D("30.00")
        assert fee_for_period(rule, self.BAL, ZERO, D("300.00"), "CNY") == D("30.00")
        assert fee_for_period(rule, self.BAL, D("30.00"), D("300.00"), "CNY") == ZERO

    def test_none_kind(self) -> None:
        assert fee_for_period(LateFee(kind="none"), self.BAL, ZERO, D("10000.00"), "CNY") == ZERO

    def test_rounding_half_up_cny(self) -> None:
        bal = Balance(principal=D("333.33"))
        assert fee_for_period(self.PERCENT, bal, ZERO, D("333.33"), "CNY") == D("16.67")  # 16.6665
        assert fee_cap(self.PERCENT, D("333.33"), "CNY") == D("83.33")  # 83.3325

    def test_rounding_half_up_jpy(self) -> None:
        assert fee_for_period(self.PERCENT, Balance(principal=D("12350")), ZERO, D("100000"), "JPY") == D("618")
        assert fee_for_period(self.PERCENT, Balance(principal=D("12345")), ZERO, D("100000"), "JPY") == D("617")

    def test_late_fee_rule_validation(self) -> None:
        with pytest.raises(ValidationError, match="a flat late fee needs 'amount'"):
            LateFee(kind="flat")
        with pytest.raises(ValidationError, match="a percent late fee needs 'rate'"):
            LateFee(kind="percent", rate=None)
        with pytest.raises(ValidationError, match="greater than 0"):
            LateFee(kind="flat", amount=D("-1"))


# ---------------------------------------------------------------------------------------------
# schedule
# ---------------------------------------------------------------------------------------------


class TestDaysPastDue:
    """DPD counts calendar days in the borrower's zone, minus paused days, never below zero."""

    # 16:30 UTC on 10 March is already 00:30 on 11 March in Shanghai (UTC+8)
    NOW = datetime(2024, 3, 10, 16, 30, tzinfo=UTC)

    def test_local_date(self) -> None:
        assert local_date(self.NOW, SHANGHAI) == date(2024, 3, 11)
        assert local_date(self.NOW, "UTC") == date(2024, 3, 10)

    def test_borrower_zone_decides(self) -> None:
        assert days_past_due(self.NOW, DUE, SHANGHAI) == 10
        assert days_past_due(self.NOW, DUE, "UTC") == 9
        assert days_past_due(self.NOW, DUE, NEW_YORK) == 9  # 12:30 EDT on 10 March

    def test_paused_days_subtracted(self) -> None:
        assert days_past_due(self.NOW, DUE, SHANGHAI, paused_days=3) == 7

    def test_never_negative(self) -> None:
        assert days_past_due(self.NOW, date(2024, 4, 1), SHANGHAI) == 0
        assert days_past_due(self.NOW, DUE, SHANGHAI, paused_days=50) == 0

    def test_due_today_is_zero(self) -> None:
        assert days_past_due(self.NOW, date(2024, 3, 11), SHANGHAI) == 0


class TestStages:
    """stage_for_dpd with the default bands early 1, middle 30, late 90."""

    @pytest.mark.parametrize(
        ("dpd", "stage"),
        [
            (0, Stage.early),
            (1, Stage.early),
            (29, Stage.early),
            (30, Stage.middle),
            (89, Stage.middle),
            (90, Stage.late),
            (179, Stage.late),
            (500, Stage.late),
        ],
    )
    def test_bands(self, default_policy: Policy, dpd: int, stage: Stage) -> None:
        assert stage_for_dpd(dpd, default_policy) is stage


class TestFeeDpds:
    """fee_dpds: first after grace, then every `every_days`, before write-off, up to max_periods."""

    def with_fee(self, policy: Policy, **kw: object) -> Policy:
        return policy.model_copy(update={"late_fee": LateFee(**kw)})

    def test_default(self, default_policy: Policy) -> None:
        assert fee_dpds(default_policy) == [7, 37, 67, 97, 127, 157]

    def test_every_days_zero_is_one_period(self, default_policy: Policy) -> None:
        assert fee_dpds(self.with_fee(default_policy, every_days=0)) == [7]

    def test_max_periods(self, default_policy: Policy) -> None:
        assert fee_dpds(self.with_fee(default_policy, max_periods=2)) == [7, 37]
        assert fee_dpds(self.with_fee(default_policy, max_periods=1, grace_days=0, every_days=10)) == [1]

    def test_none_kind(self, default_policy: Policy) -> None:
        assert fee_dpds(self.with_fee(default_policy, kind="none")) == []

    def test_grace_beyond_write_off(self, default_policy: Policy) -> None:
        assert fee_dpds(self.with_fee(default_policy, grace_days=179)) == []
        assert fee_dpds(self.with_fee(default_policy, grace_days=178)) == [179]


DEFAULT_PLAN_KEYS = [
    "step:message@1",
    "step:message@3",
    "step:call@5",
    "fee:1",  # 7
    "step:call@15",
    "stage:middle",  # 30, before the step of the same day
    "step:message@30",
    "fee:2",  # 37
    "step:field_visit@45",
    "step:agency@60",
    "fee:3",  # 67
    "stage:late",  # 90
    "fee:4",  # 97
    "step:message@120",
    "fee:5",  # 127
    "step:litigation@135",
    "fee:6",  # 157
    "write_off",  # 180
]


class TestBuildPlan:
    """build_plan orders stage changes, fees, steps and write-off by DPD, then by kind."""

    def test_default_plan_order(self, default_policy: Policy) -> None:
        plan = build_plan(default_policy, loan())  # balance 10600 >= 5000
        assert keys(plan) == DEFAULT_PLAN_KEYS
        assert [a.dpd for a in plan] == [1, 3, 5, 7, 15, 30, 30, 37, 45, 60, 67, 90, 97, 120, 127, 135, 157, 180]

    def test_action_details(self, default_policy: Policy) -> None:
        by_key = {a.key: a for a in build_plan(default_policy, loan())}
        assert by_key["stage:middle"].kind == "stage" and by_key["stage:middle"].stage is Stage.middle
        assert by_key["stage:late"].stage is Stage.late and by_key["stage:late"].dpd == 90
        assert [by_key[f"fee:{n}"].period for n in range(1, 7)] == [1, 2, 3, 4, 5, 6]
        assert by_key["fee:6"].dpd == 157
        step = by_key["step:message@30"].step
        assert step is not None and step.template == "demand_letter" and step.deadline_days == 15
        assert step.channels == ["letter"]
        assert by_key["write_off"].kind == "write_off" and by_key["write_off"].dpd == 180

    def test_field_visit_only_for_large_balances(self, default_policy: Policy) -> None:
        small = loan(principal="4000.00", interest="500.00", fees="100.00")  # 4600
        plan = build_plan(default_policy, small)
        assert keys(plan) == [k for k in DEFAULT_PLAN_KEYS if k != "step:field_visit@45"]

    def test_min_outstanding_boundary(self, default_policy: Policy) -> None:
        visit = next(s for s in default_policy.ladder if s.action == "field_visit")
        assert visit.min_outstanding == D("5000")
        assert step_applies(visit, loan(principal="4400.00", interest="500.00", fees="100.00"))  # exactly 5000
        assert not step_applies(visit, loan(principal="4399.99", interest="500.00", fees="100.00"))

    def test_products_filter_and_stage_after_write_off(self) -> None:
        policy = load_policy("flat_monthly", TEST_POLICIES)  # write-off 90, late band 60
        consumer = build_plan(policy, loan(product="consumer"))
        sme = build_plan(policy, loan(product="sme"))
        assert keys(consumer) == ["step:message@1", "fee:1", "stage:middle", "stage:late", "write_off"]
        assert keys(sme) == ["step:message@1", "fee:1", "step:call@10", "stage:middle", "stage:late", "write_off"]
        cut = policy.model_copy(update={"write_off_dpd": 50})
        assert "stage:late" not in keys(build_plan(cut, loan()))  # late band (60) lies past write-off

    def test_snapshot_penalties_count_towards_threshold(self, default_policy: Policy) -> None:
        """The field-visit threshold compares the whole snapshot total, penalties included."""
        ln = loan(principal="4000.00", interest="500.00", fees="100.00", penalties="400.00")
        assert "step:field_visit@45" in keys(build_plan(default_policy, ln))


class TestCatchUp:
    """catch_up: where a loan handed over late joins its plan, and which step runs at once."""

    def test_fresh_loan_starts_at_beginning(self, default_policy: Policy) -> None:
        plan = build_plan(default_policy, loan())
        assert catch_up(plan, 0) == (0, None)
        assert catch_up(plan, 1) == (0, None)

    def test_handed_over_at_dpd_40(self, default_policy: Policy) -> None:
        plan = build_plan(default_policy, loan())
        cursor, behind = catch_up(plan, 40)
        assert plan[cursor].key == "step:field_visit@45"
        assert cursor == DEFAULT_PLAN_KEYS.index("step:field_visit@45")
        assert behind is not None and behind.key == "step:message@30"
        assert all(a.dpd >= 40 for a in plan[cursor:])
        assert all(a.dpd < 40 for a in plan[:cursor])

    def test_small_loan_at_dpd_40_skips_to_agency(self, default_policy: Policy) -> None:
        plan = build_plan(default_policy, loan(principal="1000.00", interest="0", fees="0"))
        cursor, behind = catch_up(plan, 40)
        assert plan[cursor].key == "step:agency@60"
        assert behind is not None and behind.key == "step:message@30"

    def test_on_a_step_day_that_step_is_ahead(self, default_policy: Policy) -> None:
        plan = build_plan(default_policy, loan())
        cursor, behind = catch_up(plan, 30)
        assert plan[cursor].key == "stage:middle"
        assert behind is not None and behind.key == "step:call@15"

    def test_past_write_off_goes_straight_to_write_off(self, default_policy: Policy) -> None:
        plan = build_plan(default_policy, loan())
        assert catch_up(plan, 200) == (len(plan) - 1, None)
        assert catch_up(plan, 181) == (len(plan) - 1, None)
        assert plan[-1].kind == "write_off"

    def test_on_write_off_day_cursor_is_write_off(self, default_policy: Policy) -> None:
        plan = build_plan(default_policy, loan())
        cursor, _ = catch_up(plan, 180)
        assert cursor == len(plan) - 1


class TestContactWindow:
    """next_contact_moment keeps an instant inside the window, else moves to the next opening."""

    def test_inside_window_same_instant(self, default_policy: Policy) -> None:
        now = datetime(2024, 3, 10, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
        assert next_contact_moment(now, default_policy, SHANGHAI) == now

    def test_at_start_is_inside(self, default_policy: Policy) -> None:
        now = datetime(2024, 3, 10, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
        assert next_contact_moment(now, default_policy, SHANGHAI) == now

    def test_before_start_same_day(self, default_policy: Policy) -> None:
        now = datetime(2024, 3, 9, 23, 0, tzinfo=UTC)  # 07:00 on 10 March in Shanghai
        result = next_contact_moment(now, default_policy, SHANGHAI)
        assert result == datetime(2024, 3, 10, 8, 0, tzinfo=ZoneInfo(SHANGHAI))
        assert result == datetime(2024, 3, 10, 0, 0, tzinfo=UTC)

    def test_after_midnight_local_waits_for_same_local_day(self, default_policy: Policy) -> None:
        now = datetime(2024, 3, 10, 16, 30, tzinfo=UTC)  # 00:30 on 11 March in Shanghai
        result = next_contact_moment(now, default_policy, SHANGHAI)
        assert result == datetime(2024, 3, 11, 0, 0, tzinfo=UTC)  # 08:00 on 11 March local

    def test_after_end_next_day(self, default_policy: Policy) -> None:
        now = datetime(2024, 3, 10, 13, 30, tzinfo=UTC)  # 21:30 in Shanghai
        result = next_contact_moment(now, default_policy, SHANGHAI)
        local = result.astimezone(ZoneInfo(SHANGHAI))
        assert (local.date(), local.time()) == (date(2024, 3, 11), time(8, 0))

    def test_end_is_exclusive(self, default_policy: Policy) -> None:
        now = datetime(2024, 3, 10, 13, 0, tzinfo=UTC)  # exactly 21:00 in Shanghai
        result = next_contact_moment(now, default_policy, SHANGHAI)
        assert result == datetime(2024, 3, 11, 0, 0, tzinfo=UTC)

    def test_window_rule_validated(self) -> None:
        from models.policy import ContactWindow

        with pytest.raises(ValidationError, match=r"send_at must lie inside \[start, end\)"):
            ContactWindow(send_at=time(22, 0))


class TestActionTime:
    """action_time: steps at send_at local time, stages at local midnight, across DST."""

    def step_action(self, policy: Policy, dpd: int) -> PlannedAction:
        return PlannedAction(key=f"x@{dpd}", dpd=dpd, kind="step", step=policy.ladder[0])

    def test_before_and_after_spring_forward(self, default_policy: Policy) -> None:
        ny_loan = loan(tz=NEW_YORK)  # due 1 March; DST starts 10 March 2024 in New York
        before = action_time(self.step_action(default_policy, 5), ny_loan, default_policy, 0)
        after = action_time(self.step_action(default_policy, 15), ny_loan, default_policy, 0)
        assert (before.date(), before.time()) == (date(2024, 3, 6), time(10, 0))
        assert (after.date(), after.time()) == (date(2024, 3, 16), time(10, 0))
        assert before.utcoffset() == timedelta(hours=-5)
        assert after.utcoffset() == timedelta(hours=-4)
        assert before.astimezone(UTC) == datetime(2024, 3, 6, 15, 0, tzinfo=UTC)
        assert after.astimezone(UTC) == datetime(2024, 3, 16, 14, 0, tzinfo=UTC)

    def test_after_fall_back(self, default_policy: Policy) -> None:
        ny_loan = loan(tz=NEW_YORK, due_date=date(2024, 10, 31))  # DST ends 3 November 2024
        at = action_time(self.step_action(default_policy, 5), ny_loan, default_policy, 0)
        assert at.astimezone(UTC) == datetime(2024, 11, 5, 15, 0, tzinfo=UTC)

    def test_stage_at_local_midnight(self, default_policy: Policy) -> None:
        action = PlannedAction(key="stage:middle", dpd=30, kind="stage", stage=Stage.middle)
        at = action_time(action, loan(), default_policy, 0)
        assert at == datetime(2024, 3, 30, 16, 0, tzinfo=UTC)  # 31 March 00:00 in Shanghai

    def test_paused_days_shift(self, default_policy: Policy) -> None:
        at = action_time(self.step_action(default_policy, 5), loan(), default_policy, paused_days=2)
        assert at == datetime(2024, 3, 8, 2, 0, tzinfo=UTC)  # 8 March 10:00 in Shanghai

    def test_fee_uses_send_time(self, default_policy: Policy) -> None:
        action = PlannedAction(key="fee:1", dpd=7, kind="fee", period=1)
        at = action_time(action, loan(), default_policy, 0)
        assert at == datetime(2024, 3, 8, 2, 0, tzinfo=UTC)

    def test_at_local_gap_resolves_forward(self) -> None:
        at = at_local(date(2024, 3, 10), time(2, 30), NEW_YORK)  # 02:30 does not exist that day
        assert at.time() == time(3, 30)
        assert at.astimezone(UTC) == datetime(2024, 3, 10, 7, 30, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# policy
# ---------------------------------------------------------------------------------------------

MINIMAL = """\
name = "t"

[[ladder]]
dpd = 1
action = "message"
channels = ["sms"]
template = "reminder_first"
"""


def parse_error(text: str, source: str = "x.toml") -> str:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, source)
    return error_text(exc)


class TestLoadPolicy:
    """The shipped default policy loads with the documented settings; versions are content hashes."""

    def test_default_policy(self, default_policy: Policy) -> None:
        p = default_policy
        assert p.name == "default"
        assert p.write_off_dpd == 180 and p.recovery_days == 365
        assert p.allocation_order == ["penalties", "fees", "interest", "principal"]
        assert (p.contact.send_at, p.contact.start, p.contact.end) == (time(10), time(8), time(21))
        assert (p.stages.early, p.stages.middle, p.stages.late) == (1, 30, 90)
        assert p.late_fee.rate == D("0.05") and p.late_fee.cap_ratio == D("0.25") and p.late_fee.every_days == 30
        assert [s.key for s in p.ladder] == [
            "message@1",
            "message@3",
            "call@5",
            "call@15",
            "message@30",
            "field_visit@45",
            "agency@60",
            "message@120",
            "litigation@135",
        ]
        assert p.agency.period_days == 60

    def test_version_is_content_hash(self, default_policy: Policy) -> None:
        text = (POLICIES / "default.toml").read_text(encoding="utf-8")
        assert default_policy.version == hashlib.sha256(text.encode()).hexdigest()[:12]
        assert parse_policy(MINIMAL, "a").version != parse_policy(MINIMAL + "\n# changed\n", "a").version

    def test_explicit_version_kept_and_fixture_loads(self) -> None:
        p = load_policy("flat_monthly", TEST_POLICIES)
        assert p.version == "fixture-1"
        assert p.late_fee.kind == "flat" and p.late_fee.amount == D("50")
        assert p.allocation_order == ["principal", "interest", "fees", "penalties"]
        assert p.ladder[1].products == ["sme"]

    def test_minimal_policy_defaults(self) -> None:
        p = parse_policy(MINIMAL, "m.toml")
        assert p.write_off_dpd == 180
        assert p.allocation_order == list(COMPONENTS)
        assert p.ladder[0].channels == ["sms"]

    def test_unknown_name(self) -> None:
        with pytest.raises(PolicyError, match=r"nope\.toml: no such policy file"):
            load_policy("nope", POLICIES)

    @pytest.mark.parametrize("name", ["../default", "a/b", "default.toml", "", "..", "a b", "/etc/passwd"])
    def test_path_characters_refused(self, name: str) -> None:
        with pytest.raises(PolicyError, match=r"must be letters, digits, '-' or '_'"):
            load_policy(name, POLICIES)

    def test_policy_path(self, tmp_path: Path) -> None:
        assert policy_path("my-policy_2", tmp_path) == tmp_path / "my-policy_2.toml"

    def test_policy_error_is_value_error(self) -> None:
        assert issubclass(PolicyError, ValueError)


class TestParsePolicyErrors:
    """Every parse error names the source file and the field path."""

    def test_bad_channel(self) -> None:
        msg = parse_error(MINIMAL.replace('["sms"]', '["fax"]'))
        assert "x.toml" in msg and "ladder.0.channels.0" in msg
        assert msg.startswith("x.toml: field 'ladder.0.channels.0': Input should be 'sms', 'email' or 'letter'")

    def test_unknown_top_level_key(self) -> None:
        msg = parse_error('colour = "red"\n' + MINIMAL)
        assert msg == "x.toml: field 'colour': Extra inputs are not permitted"

    def test_unknown_nested_key(self) -> None:
        msg = parse_error(MINIMAL + "\n[late_fee]\ngrace = 3\n")
        assert msg == "x.toml: field 'late_fee.grace': Extra inputs are not permitted"

    def test_missing_name(self) -> None:
        msg = parse_error(MINIMAL.replace('name = "t"\n', ""))
        assert msg == "x.toml: field 'name': Field required"

    def test_missing_template(self) -> None:
        msg = parse_error(MINIMAL.replace('template = "reminder_first"\n', ""))
        assert msg == "x.toml: field 'ladder.0.template': Field required"

    def test_missing_ladder(self) -> None:
        assert parse_error('name = "t"\n') == "x.toml: field 'ladder': Field required"

    @pytest.mark.parametrize(
        "order",
        [
            '["penalties", "fees", "fees", "principal"]',
            '["penalties", "fees", "interest"]',
            '["penalties", "fees", "interest", "principal", "tax"]',
        ],
    )
    def test_allocation_order_not_permutation(self, order: str) -> None:
        msg = parse_error(f"allocation_order = {order}\n" + MINIMAL)
        assert msg.startswith("x.toml: field '(top level)'")
        assert "allocation_order must list each of penalties, fees, interest, principal once" in msg

    def test_ladder_out_of_order(self) -> None:
        msg = parse_error(MINIMAL + '\n[[ladder]]\ndpd = 0\naction = "call"\ntemplate = "c"\n')
        assert "x.toml" in msg and "ladder steps must be in DPD order" in msg

    def test_duplicate_step(self) -> None:
        msg = parse_error(MINIMAL + MINIMAL.split("\n", 2)[2])
        assert "two ladder steps share the same action and dpd" in msg

    @pytest.mark.parametrize("dpd", [30, 31])
    def test_step_at_or_after_write_off(self, dpd: int) -> None:
        text = "write_off_dpd = 30\n" + MINIMAL + f'\n[[ladder]]\ndpd = {dpd}\naction = "call"\ntemplate = "c"\n'
        msg = parse_error(text)
        assert msg == f"x.toml: field '(top level)': Value error, steps at or after write_off_dpd: call@{dpd}"

    def test_flat_fee_without_amount(self) -> None:
        msg = parse_error(MINIMAL + '\n[late_fee]\nkind = "flat"\n')
        assert msg == "x.toml: field 'late_fee': Value error, a flat late fee needs 'amount'"

    def test_float_fee_amount(self) -> None:
        msg = parse_error(MINIMAL + '\n[late_fee]\nkind = "flat"\namount = 5.5\n')
        assert "late_fee.amount" in msg and "never float" in msg

    def test_invalid_toml(self) -> None:
        msg = parse_error("name = = 1", source="broken.toml")
        assert msg.startswith("broken.toml: not valid TOML:")

    def test_message_step_needs_channel(self) -> None:
        msg = parse_error(MINIMAL.replace('channels = ["sms"]\n', ""))
        assert "field 'ladder.0'" in msg and "a message step needs at least one channel" in msg

    def test_channels_only_on_message_steps(self) -> None:
        msg = parse_error(MINIMAL.replace('action = "message"', 'action = "call"'))
        assert "field 'ladder.0'" in msg and "channels apply to message steps only, not call" in msg

    def test_stage_bands_must_rise(self) -> None:
        msg = parse_error(MINIMAL + "\n[stages]\nmiddle = 100\nlate = 90\n")
        assert msg.startswith("x.toml: field 'stages'") and "stage bands must rise" in msg

    def test_every_error_is_reported(self) -> None:
        msg = parse_error("write_off_dpd = 0\nrecovery_days = -1\n" + MINIMAL)
        lines = msg.splitlines()
        assert len(lines) == 2
        assert all(line.startswith("x.toml: field '") for line in lines)
        assert {line.split("'")[1] for line in lines} == {"write_off_dpd", "recovery_days"}


# ---------------------------------------------------------------------------------------------
# payment
# ---------------------------------------------------------------------------------------------

PAID_AT = datetime(2024, 3, 10, 2, 0, tzinfo=UTC)


def payment(amount: str = "100.00", currency: str = "CNY", payment_id: str = "P-1") -> Payment:
    return Payment(payment_id=payment_id, amount=D(amount), currency=currency, paid_at=PAID_AT)


class TestPayment:
    """Payment model validation and check_payment's reasons for refusing a payment."""

    def test_good_payment_passes(self) -> None:
        check_payment(payment(), "CNY", ["P-0"], None)  # raises if it refuses

    @pytest.mark.parametrize(("amount", "shown"), [("0", "0"), ("-5.00", "-5.00")])
    def test_non_positive_amount(self, amount: str, shown: str) -> None:
        with pytest.raises(PaymentRejected) as exc:
            check_payment(payment(amount), "CNY", [], None)
        assert error_text(exc) == f"payment amount must be positive, got {shown}"

    def test_wrong_currency(self) -> None:
        with pytest.raises(PaymentRejected) as exc:
            check_payment(payment(currency="USD"), "CNY", [], None)
        assert error_text(exc) == "payment currency USD differs from the loan's CNY"

    def test_too_many_decimals(self) -> None:
        with pytest.raises(PaymentRejected) as exc:
            check_payment(payment("10.005"), "CNY", [], None)
        assert error_text(exc) == "payment amount 10.005 has more decimals than CNY allows"
        with pytest.raises(PaymentRejected, match=r"payment amount 100.5 has more decimals than JPY allows"):
            check_payment(payment("100.5", "JPY"), "JPY", [], None)

    def test_duplicate_payment_id(self) -> None:
        with pytest.raises(PaymentRejected) as exc:
            check_payment(payment(payment_id="P-7"), "CNY", ["P-6", "P-7"], None)
        assert error_text(exc) == "payment P-7 was already applied"

    @pytest.mark.parametrize("stage", [Stage.paid, Stage.settled, Stage.closed])
    def test_closed_loan(self, stage: Stage) -> None:
        with pytest.raises(PaymentRejected) as exc:
            check_payment(payment(), "CNY", [], stage)
        assert error_text(exc) == f"the loan is closed ({stage}); payment P-1 not applied"

    def test_rejected_is_value_error(self) -> None:
        assert issubclass(PaymentRejected, ValueError)

    @pytest.mark.parametrize("amount", [100.0, 99.99])
    def test_float_amount_rejected(self, amount: float) -> None:
        with pytest.raises(ValidationError, match="never float"):
            Payment(payment_id="P", amount=amount, currency="CNY", paid_at=PAID_AT)

    def test_bad_currency_rejected(self) -> None:
        with pytest.raises(ValidationError, match="ISO 4217"):
            payment(currency="yen")

    def test_naive_paid_at_rejected(self) -> None:
        with pytest.raises(ValidationError, match="timezone"):
            Payment(payment_id="P", amount=D("1"), currency="CNY", paid_at=datetime(2024, 3, 10, 10, 0))

    def test_empty_payment_id_rejected(self) -> None:
        with pytest.raises(ValidationError, match="payment_id"):
            payment(payment_id="")

    def test_huge_amount_rejected_cleanly(self) -> None:
        with pytest.raises(ValidationError, match="out of range"):
            payment("1" + "0" * 30)


# ---------------------------------------------------------------------------------------------
# context
# ---------------------------------------------------------------------------------------------


class TestTemplateContext:
    """template_context: formatted amounts, DPD and dates in the borrower's zone."""

    NOW = datetime(2024, 3, 10, 16, 30, tzinfo=UTC)  # 11 March 00:30 in Shanghai

    def state(self, policy: Policy, ln: OverdueLoan | None = None, **kw: object) -> CollectionState:
        ln = ln or loan()
        data: dict[str, object] = {"loan": ln, "policy": policy, "started_at": self.NOW, "balance": ln.balance()}
        data.update(kw)
        return CollectionState(**data)

    def test_amounts_and_dates(self, default_policy: Policy) -> None:
        bal = Balance(principal=D("10000"), interest=D("500.00"), fees=D("100.00"), penalties=D("525.00"))
        st = self.state(default_policy, balance=bal, paid_total=D("1234.5"), paused_days=2)
        ctx = template_context(st, self.NOW, Stage.early)
        assert ctx["amount_due"] == "11,125.00"
        assert ctx["principal"] == "10,000.00"  # quantized to two decimals
        assert ctx["interest"] == "500.00"
        assert ctx["fees"] == "100.00"
        assert ctx["penalties"] == "525.00"
        assert ctx["paid_total"] == "1,234.50"
        assert ctx["currency"] == "CNY"
        assert ctx["dpd"] == "8"  # 10 days on the Shanghai calendar, minus 2 paused
        assert ctx["today"] == "2024-03-11"
        assert ctx["due_date"] == "2024-03-01"
        assert ctx["stage"] == "early"
        assert ctx["loan_id"] == "L-1"
        assert ctx["borrower_name"] == "李明"
        assert ctx["borrower_address"] == "上海市浦东新区世纪大道1号"
        assert "deadline" not in ctx

    def test_deadline(self, default_policy: Policy) -> None:
        ctx = template_context(self.state(default_policy), self.NOW, Stage.middle, deadline_days=15)
        assert ctx["deadline"] == "2024-03-26"  # 15 days after the borrower's today (11 March)
        assert ctx["stage"] == "middle"
        assert ctx["dpd"] == "10"

    def test_lender_details(self, default_policy: Policy) -> None:
        ctx = template_context(self.state(default_policy), self.NOW, Stage.early)
        assert ctx["lender_name"] == "Example Lending Co."
        assert ctx["lender_phone"] == "400-000-0000"
        assert ctx["lender_website"] == "https://lender.example"
        assert ctx["dispute_contact"] == "disputes@lender.example"

    def test_jpy_has_no_decimals(self, default_policy: Policy) -> None:
        ln = loan(currency="JPY", principal="1234567", interest="0", fees="0")
        ctx = template_context(self.state(default_policy, ln), self.NOW, Stage.early)
        assert ctx["amount_due"] == "1,234,567"
        assert ctx["paid_total"] == "0"

    def test_extra_values(self, default_policy: Policy) -> None:
        ctx = template_context(self.state(default_policy), self.NOW, Stage.late, channel="sms")
        assert ctx["channel"] == "sms"
        assert all(isinstance(v, str) for v in ctx.values())
