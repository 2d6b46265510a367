"""Unit tests of the pure negotiation rules: `models/arrangements.py` and `models/negotiation.py`.

No Temporal server, no database, no clock: every date and instant is fixed so each expectation
is exact. Sections follow the functions: refuse_arrangement, check_promise, add_periods,
plan_schedule, check_settlement, check_due, then pause_reason, days_between, held_so_far,
held_since, judged_at, credit_payments, judge_instalment and arrangement_info.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from infra.loaders import load_policy
from models.arrangements import (
    ArrangementInfo,
    ArrangementRejected,
    Hold,
    Instalment,
    NegotiationCounts,
    Plan,
    PlanProposal,
    Promise,
    PromiseRequest,
    Settlement,
    SettlementOffer,
    StopInfo,
    add_periods,
    check_due,
    check_promise,
    check_settlement,
    plan_schedule,
    refuse_arrangement,
)
from models.loan import Balance, Borrower, OverdueLoan
from models.negotiation import (
    arrangement_info,
    credit_payments,
    days_between,
    held_since,
    held_so_far,
    judge_instalment,
    judged_at,
    pause_reason,
)
from models.policy import Frequency, Policy
from models.status import CollectionState
from tests.helpers import ROOT

POLICIES = ROOT / "policies"

SHANGHAI = "Asia/Shanghai"
NEW_YORK = "America/New_York"
D = Decimal

TODAY = date(2024, 4, 10)
NOW = datetime(2024, 4, 10, 2, 0, tzinfo=UTC)  # 10:00 on 10 April in Shanghai
OUTSTANDING = D("11125.00")  # the helper loan's balance: 10000 + 500 + 100 + 525
InstalmentStatus = Literal["pending", "kept", "missed", "caught_up"]  # Instalment.status


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def loan(
    *,
    currency: str = "CNY",
    tz: str = SHANGHAI,
    principal: str = "10000.00",
    interest: str = "500.00",
    fees: str = "100.00",
    penalties: str = "525.00",
) -> OverdueLoan:
    """A loan with fixed figures (total 11125.00) and a fixed due date."""
    return OverdueLoan(
        loan_id="L-1",
        borrower=Borrower(borrower_id="B-1", name="李明", address="上海市浦东新区世纪大道1号", timezone=tz),
        currency=currency,
        principal=D(principal),
        interest=D(interest),
        fees=D(fees),
        penalties=D(penalties),
        due_date=date(2024, 3, 1),
    )


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy("default", POLICIES)


def custom(policy: Policy, **sections: dict[str, Any]) -> Policy:
    """`policy` with some fields of its sections replaced, validated like a file would be."""
    data = policy.model_dump()
    for name, overrides in sections.items():
        data[name] = {**data[name], **overrides}
    return Policy.model_validate(data)


def state(policy: Policy, ln: OverdueLoan | None = None, **kw: Any) -> CollectionState:
    ln = ln or loan()
    data: dict[str, Any] = {
        "loan": ln,
        "policy": policy,
        "started_at": NOW,
        "balance": ln.balance(),
        "counts": NegotiationCounts(),
    }
    data.update(kw)
    return CollectionState(**data)


def promise(
    *,
    amount: str = "1000.00",
    due: date = date(2024, 4, 20),
    paid_at_start: str = "0",
    held_at_start: int = 0,
    status: str = "open",
) -> Promise:
    return Promise(
        promise_id="L-1/promise/1",
        amount=D(amount),
        due=due,
        made_at=NOW,
        paid_at_start=D(paid_at_start),
        held_at_start=held_at_start,
        made_by="agent",
        status=status,
    )


def instalments(*amounts: str, first_due: date = date(2024, 4, 20), start: int = 1) -> list[Instalment]:
    """Monthly instalments of `amounts` with their running totals."""
    result, cumulative = [], D("0")
    for i, amount in enumerate(amounts):
        cumulative += D(amount)
        result.append(
            Instalment(
                number=start + i, due=add_periods(first_due, "monthly", i), amount=D(amount), cumulative=cumulative
            )
        )
    return result


def plan(
    *, paid_at_start: str = "0", status: str = "active", missed: int = 0, items: list[Instalment] | None = None
) -> Plan:
    """The 11125.00 plan in three monthly instalments from 20 April."""
    items = items if items is not None else instalments("3708.33", "3708.33", "3708.34")
    return Plan(
        plan_id="L-1/plan/2",
        total=sum((i.amount for i in items), D("0")),
        frequency="monthly",
        instalments=items,
        made_at=NOW,
        paid_at_start=D(paid_at_start),
        held_at_start=0,
        made_by="agent",
        missed=missed,
        status=status,
    )


def settlement(
    *, amount: str = "10012.50", deadline: date = date(2024, 5, 1), paid_at_start: str = "0", status: str = "open"
) -> Settlement:
    return Settlement(
        offer_id="L-1/settlement/3",
        amount=D(amount),
        deadline=deadline,
        discount=D("0.1000"),
        made_at=NOW,
        paid_at_start=D(paid_at_start),
        held_at_start=0,
        made_by="agent",
        status=status,
    )


def hold(kind: str, started_at: datetime = NOW) -> Hold:
    return Hold(
        kind=kind, reason="lost job" if kind == "hardship" else "not my loan", started_at=started_at, by="agent"
    )


def rejected(exc: pytest.ExceptionInfo[BaseException]) -> str:
    assert exc.type is ArrangementRejected
    return str(exc.value)


# ---------------------------------------------------------------------------------------------
# refuse_arrangement
# ---------------------------------------------------------------------------------------------


class TestRefuseArrangement:
    @pytest.mark.parametrize(
        ("closed", "stopped", "disputed", "message"),
        [
            (True, False, False, "the loan is closed"),
            (False, True, False, "collection is stopped for this loan"),
            (False, False, True, "a dispute is open; nothing can be arranged until it is resolved"),
            (True, True, True, "the loan is closed"),  # the closed loan is named first
            (False, True, True, "collection is stopped for this loan"),  # then the stop
        ],
    )
    def test_refused(self, closed: bool, stopped: bool, disputed: bool, message: str) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            refuse_arrangement(closed=closed, stopped=stopped, disputed=disputed)
        assert str(exc.value) == message

    def test_rejection_is_a_value_error(self) -> None:
        assert issubclass(ArrangementRejected, ValueError)

    def test_passes_otherwise(self) -> None:
        refuse_arrangement(closed=False, stopped=False, disputed=False)  # raises if it refuses


# ---------------------------------------------------------------------------------------------
# check_promise
# ---------------------------------------------------------------------------------------------


class TestCheckPromise:
    def check(
        self,
        policy: Policy,
        amount: str = "1000.00",
        day: date = date(2024, 4, 20),
        *,
        currency: str = "CNY",
        outstanding: Decimal = OUTSTANDING,
        broken: int = 0,
        promise_open: bool = False,
        plan_active: bool = False,
    ) -> None:
        check_promise(
            PromiseRequest(amount=D(amount), date=day),
            today=TODAY,
            outstanding=outstanding,
            currency=currency,
            broken=broken,
            promise_open=promise_open,
            plan_active=plan_active,
            policy=policy,
        )

    def test_good_promise_passes(self, policy: Policy) -> None:
        self.check(policy)  # raises if it refuses

    def test_default_policy_figures(self, policy: Policy) -> None:
        assert (policy.promise.max_days, policy.promise.grace_days, policy.promise.max_broken) == (14, 2, 2)

    def test_max_broken_reached(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, broken=2)
        assert rejected(exc) == "2 promises already broken; the policy allows no more promises"

    def test_one_broken_is_still_allowed(self, policy: Policy) -> None:
        self.check(policy, broken=1)

    def test_over_max_broken(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected, match=r"^3 promises already broken"):
            self.check(policy, broken=3)

    def test_custom_max_broken(self, policy: Policy) -> None:
        strict = custom(policy, promise={"max_broken": 1})
        with pytest.raises(ArrangementRejected, match=r"^1 promises already broken"):
            self.check(strict, broken=1)

    def test_promise_already_open(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, promise_open=True)
        assert rejected(exc) == "a promise is already open"

    def test_plan_active(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, plan_active=True)
        assert rejected(exc) == "an instalment plan is active; renegotiate the plan instead"

    def test_date_in_the_past(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, day=date(2024, 4, 9))
        assert rejected(exc) == "the promise date 2024-04-09 is in the past"

    def test_today_is_allowed(self, policy: Policy) -> None:
        self.check(policy, day=TODAY)

    def test_exactly_max_days_ahead_is_allowed(self, policy: Policy) -> None:
        self.check(policy, day=date(2024, 4, 24))  # 14 days ahead

    def test_beyond_max_days(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, day=date(2024, 4, 25))
        assert rejected(exc) == "the promise date 2024-04-25 is more than 14 days ahead"

    def test_custom_max_days(self, policy: Policy) -> None:
        short = custom(policy, promise={"max_days": 3})
        self.check(short, day=date(2024, 4, 13))
        with pytest.raises(ArrangementRejected, match=r"^the promise date 2024-04-14 is more than 3 days ahead$"):
            self.check(short, day=date(2024, 4, 14))

    def test_amount_over_outstanding(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, amount="11125.01")
        assert rejected(exc) == "promised amount 11125.01 exceeds the outstanding 11125.00"

    def test_whole_outstanding_is_allowed(self, policy: Policy) -> None:
        self.check(policy, amount="11125.00")

    def test_too_many_decimals(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, amount="100.005")
        assert rejected(exc) == "promised amount 100.005 has more decimals than CNY allows"

    def test_jpy_takes_no_decimals(self, policy: Policy) -> None:
        self.check(policy, amount="5000", currency="JPY", outstanding=D("10000"))
        with pytest.raises(ArrangementRejected, match=r"^promised amount 5000.5 has more decimals than JPY allows$"):
            self.check(policy, amount="5000.5", currency="JPY", outstanding=D("10000"))

    def test_broken_is_checked_first(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected, match="promises already broken"):
            self.check(policy, "99999.999", date(2020, 1, 1), broken=2, promise_open=True, plan_active=True)

    def test_request_amount_must_be_positive(self) -> None:
        with pytest.raises(ValidationError):
            PromiseRequest(amount=D("0"), date=TODAY)


# ---------------------------------------------------------------------------------------------
# add_periods
# ---------------------------------------------------------------------------------------------


class TestAddPeriods:
    @pytest.mark.parametrize(
        ("start", "frequency", "n", "expected"),
        [
            (date(2024, 4, 10), "weekly", 0, date(2024, 4, 10)),
            (date(2024, 4, 10), "weekly", 1, date(2024, 4, 17)),
            (date(2024, 4, 10), "weekly", 3, date(2024, 5, 1)),
            (date(2024, 12, 30), "weekly", 1, date(2025, 1, 6)),
            (date(2024, 4, 10), "biweekly", 1, date(2024, 4, 24)),
            (date(2024, 4, 10), "biweekly", 2, date(2024, 5, 8)),
            (date(2024, 12, 20), "biweekly", 1, date(2025, 1, 3)),
            (date(2024, 4, 10), "monthly", 0, date(2024, 4, 10)),
            (date(2024, 4, 10), "monthly", 1, date(2024, 5, 10)),
            (date(2024, 1, 31), "monthly", 1, date(2024, 2, 29)),  # leap year
            (date(2023, 1, 31), "monthly", 1, date(2023, 2, 28)),
            (date(2024, 1, 31), "monthly", 2, date(2024, 3, 31)),  # the day is kept, not drifting
            (date(2024, 1, 31), "monthly", 3, date(2024, 4, 30)),
            (date(2024, 3, 31), "monthly", 1, date(2024, 4, 30)),
            (date(2024, 11, 15), "monthly", 1, date(2024, 12, 15)),
            (date(2024, 12, 15), "monthly", 1, date(2025, 1, 15)),  # year rollover
            (date(2024, 11, 30), "monthly", 3, date(2025, 2, 28)),
            (date(2024, 2, 10), "monthly", 11, date(2025, 1, 10)),
            (date(2024, 1, 10), "monthly", 12, date(2025, 1, 10)),
            (date(2024, 1, 10), "monthly", 24, date(2026, 1, 10)),
            (date(2024, 2, 29), "monthly", 12, date(2025, 2, 28)),
        ],
    )
    def test_periods(self, start: date, frequency: Frequency, n: int, expected: date) -> None:
        assert add_periods(start, frequency, n) == expected


# ---------------------------------------------------------------------------------------------
# plan_schedule
# ---------------------------------------------------------------------------------------------


def rows(schedule: list[Instalment]) -> list[tuple[int, date, str, str, str]]:
    return [(i.number, i.due, str(i.amount), str(i.cumulative), i.status) for i in schedule]


class TestPlanSchedule:
    def schedule(
        self,
        policy: Policy,
        *,
        instalments: int = 3,
        frequency: str = "monthly",
        first_due: date = date(2024, 4, 20),
        down_payment: str = "0",
        total: Decimal = OUTSTANDING,
        currency: str = "CNY",
        renegotiations: int = 0,
    ) -> list[Instalment]:
        req = PlanProposal(
            instalments=instalments, frequency=frequency, first_due=first_due, down_payment=D(down_payment)
        )
        return plan_schedule(
            req, total=total, currency=currency, today=TODAY, policy=policy, renegotiations=renegotiations
        )

    def test_equal_instalments_remainder_on_the_last(self, policy: Policy) -> None:
        assert rows(self.schedule(policy)) == [
            (1, date(2024, 4, 20), "3708.33", "3708.33", "pending"),
            (2, date(2024, 5, 20), "3708.33", "7416.66", "pending"),
            (3, date(2024, 6, 20), "3708.34", "11125.00", "pending"),
        ]

    def test_adds_up_to_total_exactly(self, policy: Policy) -> None:
        sched = self.schedule(policy, instalments=7, frequency="weekly", total=D("1000.00"))
        assert [str(i.amount) for i in sched] == ["142.85"] * 6 + ["142.90"]
        assert sum(i.amount for i in sched) == D("1000.00")
        assert sched[-1].cumulative == D("1000.00")

    def test_even_split(self, policy: Policy) -> None:
        sched = self.schedule(policy, instalments=4, frequency="biweekly", total=D("1000.00"))
        assert rows(sched) == [
            (1, date(2024, 4, 20), "250.00", "250.00", "pending"),
            (2, date(2024, 5, 4), "250.00", "500.00", "pending"),
            (3, date(2024, 5, 18), "250.00", "750.00", "pending"),
            (4, date(2024, 6, 1), "250.00", "1000.00", "pending"),
        ]

    def test_single_instalment(self, policy: Policy) -> None:
        assert rows(self.schedule(policy, instalments=1)) == [(1, date(2024, 4, 20), "11125.00", "11125.00", "pending")]

    def test_down_payment_is_number_zero_due_today(self, policy: Policy) -> None:
        sched = self.schedule(policy, down_payment="1125.00")
        assert rows(sched) == [
            (0, TODAY, "1125.00", "1125.00", "pending"),
            (1, date(2024, 4, 20), "3333.33", "4458.33", "pending"),
            (2, date(2024, 5, 20), "3333.33", "7791.66", "pending"),
            (3, date(2024, 6, 20), "3333.34", "11125.00", "pending"),
        ]

    def test_month_end_first_due_is_clamped_each_month(self, policy: Policy) -> None:
        sched = self.schedule(policy, first_due=date(2024, 4, 30), instalments=3, total=D("300.00"))
        assert [i.due for i in sched] == [date(2024, 4, 30), date(2024, 5, 30), date(2024, 6, 30)]
        from_jan = plan_schedule(
            PlanProposal(instalments=4, first_due=date(2024, 1, 31)),
            total=D("400.00"),
            currency="CNY",
            today=date(2024, 1, 10),
            policy=policy,
        )
        assert [i.due for i in from_jan] == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]

    def test_year_rollover(self, policy: Policy) -> None:
        sched = plan_schedule(
            PlanProposal(instalments=3, first_due=date(2024, 12, 15)),
            total=D("900.00"),
            currency="CNY",
            today=date(2024, 12, 1),
            policy=policy,
        )
        assert [i.due for i in sched] == [date(2024, 12, 15), date(2025, 1, 15), date(2025, 2, 15)]

    def test_jpy_rounds_to_whole_yen(self, policy: Policy) -> None:
        sched = self.schedule(policy, total=D("10000"), currency="JPY")
        assert [(str(i.amount), str(i.cumulative)) for i in sched] == [
            ("3333", "3333"),
            ("3333", "6666"),
            ("3334", "10000"),
        ]

    def test_jpy_down_payment_with_decimals(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.schedule(policy, total=D("10000"), currency="JPY", down_payment="100.5")
        assert rejected(exc) == "down payment 100.5 has more decimals than JPY allows"

    # -- rejections

    def test_frequency_not_allowed(self, policy: Policy) -> None:
        monthly_only = custom(policy, plan={"frequencies": ["monthly"]})
        self.schedule(monthly_only, frequency="monthly")
        with pytest.raises(ArrangementRejected) as exc:
            self.schedule(monthly_only, frequency="weekly")
        assert rejected(exc) == "frequency weekly is not allowed (monthly)"
        two = custom(policy, plan={"frequencies": ["weekly", "biweekly"]})
        with pytest.raises(ArrangementRejected, match=r"^frequency monthly is not allowed \(weekly, biweekly\)$"):
            self.schedule(two, frequency="monthly")

    def test_too_many_instalments(self, policy: Policy) -> None:
        self.schedule(policy, instalments=12)
        with pytest.raises(ArrangementRejected) as exc:
            self.schedule(policy, instalments=13)
        assert rejected(exc) == "13 instalments exceed the maximum of 12"

    def test_first_due_in_the_past(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.schedule(policy, first_due=date(2024, 4, 9))
        assert rejected(exc) == "the first due date 2024-04-09 is in the past"

    def test_first_due_today_is_allowed(self, policy: Policy) -> None:
        assert self.schedule(policy, first_due=TODAY)[0].due == TODAY

    def test_first_due_too_far(self, policy: Policy) -> None:
        assert self.schedule(policy, first_due=date(2024, 5, 10))[0].due == date(2024, 5, 10)  # exactly 30 days
        with pytest.raises(ArrangementRejected) as exc:
            self.schedule(policy, first_due=date(2024, 5, 11))
        assert rejected(exc) == "the first due date is more than 30 days ahead"

    def test_down_payment_over_total(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.schedule(policy, down_payment="11125.01")
        assert rejected(exc) == "down payment 11125.01 exceeds the outstanding 11125.00"

    def test_down_payment_with_too_many_decimals(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected, match=r"^down payment 10\.001 has more decimals than CNY allows$"):
            self.schedule(policy, down_payment="10.001")

    def test_term_beyond_max_term_days(self, policy: Policy) -> None:
        short = custom(policy, plan={"max_term_days": 56})
        # weekly from today: the 9th payment is 56 days ahead (allowed), the 10th 63 days
        assert self.schedule(short, instalments=9, frequency="weekly", first_due=TODAY)[-1].due == date(2024, 6, 5)
        with pytest.raises(ArrangementRejected) as exc:
            self.schedule(short, instalments=10, frequency="weekly", first_due=TODAY)
        assert rejected(exc) == "the plan would end on 2024-06-12, beyond the longest term of 56 days"

    def test_default_term_is_a_year(self, policy: Policy) -> None:
        # 12 monthly payments from 10 May end on 10 April 2025: 365 days ahead (allowed);
        # from 11 May (a first due date one day further than the default allows) 366 days ahead
        assert self.schedule(policy, instalments=12, first_due=date(2024, 5, 10))[-1].due == date(2025, 4, 10)
        later_start = custom(policy, plan={"max_first_due_days": 31})
        with pytest.raises(
            ArrangementRejected, match=r"^the plan would end on 2025-04-11, beyond the longest term of 365 days$"
        ):
            self.schedule(later_start, instalments=12, first_due=date(2024, 5, 11))

    def test_instalment_below_min(self, policy: Policy) -> None:
        assert str(self.schedule(policy, instalments=3, total=D("300.00"))[0].amount) == "100.00"
        with pytest.raises(ArrangementRejected) as exc:
            self.schedule(policy, instalments=3, total=D("299.99"))
        assert rejected(exc) == "instalments of 99.99 are below the smallest allowed, 100"

    def test_min_instalment_counts_after_the_down_payment(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected, match=r"^instalments of 41.66 are below the smallest allowed, 100$"):
            self.schedule(policy, down_payment="11000.00")  # 125.00 left over 3

    def test_whole_total_as_down_payment_leaves_nothing_to_plan(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected, match=r"^instalments of 0.00 are below the smallest allowed, 100$"):
            self.schedule(policy, down_payment="11125.00")

    def test_renegotiations(self, policy: Policy) -> None:
        assert len(self.schedule(policy, renegotiations=2)) == 3  # the second renegotiation is allowed
        with pytest.raises(ArrangementRejected) as exc:
            self.schedule(policy, renegotiations=3)
        assert rejected(exc) == "the plan was renegotiated 2 times already"

    def test_no_renegotiation_allowed(self, policy: Policy) -> None:
        none = custom(policy, plan={"max_renegotiations": 0})
        self.schedule(none, renegotiations=0)
        with pytest.raises(ArrangementRejected, match=r"^the plan was renegotiated 0 times already$"):
            self.schedule(none, renegotiations=1)

    def test_renegotiations_checked_first(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected, match="renegotiated"):
            self.schedule(policy, renegotiations=3, instalments=99, first_due=date(2020, 1, 1))


# ---------------------------------------------------------------------------------------------
# check_settlement
# ---------------------------------------------------------------------------------------------


class TestCheckSettlement:
    def check(
        self,
        policy: Policy,
        amount: str,
        *,
        stage: str = "middle",
        deadline: date = date(2024, 5, 1),
        outstanding: Decimal = OUTSTANDING,
        currency: str = "CNY",
        settlement_open: bool = False,
    ) -> Decimal:
        return check_settlement(
            SettlementOffer(amount=D(amount), deadline=deadline),
            today=TODAY,
            outstanding=outstanding,
            currency=currency,
            stage=stage,
            settlement_open=settlement_open,
            policy=policy,
        )

    def test_discount_returned_quantized(self, policy: Policy) -> None:
        result = self.check(policy, "2800.00", outstanding=D("3000.00"))  # 0.0666...
        assert result == D("0.0667")
        assert str(result) == "0.0667"

    def test_no_discount(self, policy: Policy) -> None:
        assert str(self.check(policy, "11125.00", stage="early")) == "0.0000"

    @pytest.mark.parametrize(
        ("stage", "at_limit", "discount", "over_limit", "message"),
        [
            ("early", "11125.00", "0.0000", "11124.99", "a discount of 0.00% exceeds the 0% allowed at stage early"),
            (
                "middle",
                "10012.50",
                "0.1000",
                "10012.49",
                "a discount of 10.00% exceeds the 10% allowed at stage middle",
            ),
            ("late", "7787.50", "0.3000", "7787.49", "a discount of 30.00% exceeds the 30% allowed at stage late"),
            (
                "written_off",
                "5562.50",
                "0.5000",
                "5562.49",
                "a discount of 50.00% exceeds the 50% allowed at stage written_off",
            ),
        ],
    )
    def test_limits_per_stage(
        self, policy: Policy, stage: str, at_limit: str, discount: str, over_limit: str, message: str
    ) -> None:
        assert str(self.check(policy, at_limit, stage=stage)) == discount
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, over_limit, stage=stage)
        assert rejected(exc) == message

    def test_unknown_stage_allows_no_discount(self, policy: Policy) -> None:
        assert str(self.check(policy, "11125.00", stage="paid")) == "0.0000"
        with pytest.raises(ArrangementRejected, match=r"^a discount of 8.99% exceeds the 0% allowed at stage paid$"):
            self.check(policy, "10125.00", stage="paid")

    def test_custom_limit(self, policy: Policy) -> None:
        generous = custom(policy, settlement={"max_discount": {"early": "0.20"}})
        assert str(self.check(generous, "8900.00", stage="early")) == "0.2000"
        # a stage left out of the table allows nothing
        with pytest.raises(ArrangementRejected, match=r"allowed at stage middle$"):
            self.check(generous, "11000.00", stage="middle")

    def test_deadline_in_the_past(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, "11125.00", deadline=date(2024, 4, 9))
        assert rejected(exc) == "the deadline 2024-04-09 is in the past"

    def test_deadline_today_and_at_max_days(self, policy: Policy) -> None:
        self.check(policy, "11125.00", deadline=TODAY)
        self.check(policy, "11125.00", deadline=date(2024, 5, 10))  # exactly 30 days

    def test_deadline_too_far(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, "11125.00", deadline=date(2024, 5, 11))
        assert rejected(exc) == "the deadline is more than 30 days ahead"

    def test_open_offer(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, "11125.00", settlement_open=True)
        assert rejected(exc) == "a settlement offer is already open"

    def test_amount_over_outstanding(self, policy: Policy) -> None:
        with pytest.raises(ArrangementRejected) as exc:
            self.check(policy, "11125.01")
        assert rejected(exc) == "settlement amount 11125.01 exceeds the outstanding 11125.00"

    def test_too_many_decimals(self, policy: Policy) -> None:
        with pytest.raises(
            ArrangementRejected, match=r"^settlement amount 10500\.005 has more decimals than CNY allows$"
        ):
            self.check(policy, "10500.005")

    def test_jpy(self, policy: Policy) -> None:
        assert str(self.check(policy, "9000", outstanding=D("10000"), currency="JPY")) == "0.1000"
        with pytest.raises(ArrangementRejected, match="more decimals than JPY allows"):
            self.check(policy, "9000.5", outstanding=D("10000"), currency="JPY")


# ---------------------------------------------------------------------------------------------
# check_due
# ---------------------------------------------------------------------------------------------


class TestCheckDue:
    @pytest.mark.parametrize(
        ("due", "grace", "held", "expected"),
        [
            (date(2024, 4, 20), 0, 0, date(2024, 4, 20)),
            (date(2024, 4, 20), 2, 0, date(2024, 4, 22)),
            (date(2024, 4, 20), 0, 5, date(2024, 4, 25)),
            (date(2024, 4, 20), 3, 5, date(2024, 4, 28)),
            (date(2024, 2, 27), 2, 1, date(2024, 3, 1)),  # through 29 February
            (date(2024, 12, 30), 2, 0, date(2025, 1, 1)),
        ],
    )
    def test_grace_and_held_days_added(self, due: date, grace: int, held: int, expected: date) -> None:
        assert check_due(due, grace, held) == expected


# ---------------------------------------------------------------------------------------------
# pause_reason
# ---------------------------------------------------------------------------------------------


class TestPauseReason:
    def full(self, policy: Policy) -> CollectionState:
        return state(
            policy,
            stop=StopInfo(reason="bankruptcy", route="legal_review", at=NOW, by="agent"),
            holds=[hold("hardship"), hold("dispute")],
            settlement=settlement(),
            plan=plan(),
            promise=promise(),
        )

    def test_priority(self, policy: Policy) -> None:
        s = self.full(policy)
        seen = [pause_reason(s)]
        s.stop = None
        seen.append(pause_reason(s))
        s.holds = [h for h in s.holds if h.kind != "dispute"]
        seen.append(pause_reason(s))
        s.holds = []
        seen.append(pause_reason(s))
        s.settlement = None
        seen.append(pause_reason(s))
        s.plan = None
        seen.append(pause_reason(s))
        s.promise = None
        seen.append(pause_reason(s))
        assert seen == [
            "stopped: bankruptcy (legal_review)",
            "dispute open",
            "hardship breathing space",
            "settlement offer open",
            "instalment plan",
            "promise to pay",
            None,
        ]

    def test_stop_names_reason_and_route(self, policy: Policy) -> None:
        s = state(policy, stop=StopInfo(reason="death", route="write_off", at=NOW, by="agent"))
        assert pause_reason(s) == "stopped: death (write_off)"

    def test_finished_arrangements_do_not_pause(self, policy: Policy) -> None:
        s = state(
            policy, settlement=settlement(status="lapsed"), plan=plan(status="broken"), promise=promise(status="kept")
        )
        assert pause_reason(s) is None
        s.promise = promise(status="open")
        assert pause_reason(s) == "promise to pay"

    def test_each_arrangement_alone(self, policy: Policy) -> None:
        assert pause_reason(state(policy, settlement=settlement())) == "settlement offer open"
        assert pause_reason(state(policy, plan=plan())) == "instalment plan"
        assert pause_reason(state(policy, holds=[hold("hardship")])) == "hardship breathing space"
        assert pause_reason(state(policy, holds=[hold("dispute")])) == "dispute open"


# ---------------------------------------------------------------------------------------------
# days_between, held_since, judged_at
# ---------------------------------------------------------------------------------------------


class TestDaysBetween:
    START = datetime(2024, 3, 10, 15, 0, tzinfo=UTC)  # 23:00 on 10 March in Shanghai
    END = datetime(2024, 3, 10, 17, 0, tzinfo=UTC)  # 01:00 on 11 March in Shanghai

    def test_local_date_boundary(self) -> None:
        assert days_between(self.START, self.END, SHANGHAI) == 1
        assert days_between(self.START, self.END, "UTC") == 0
        assert days_between(self.START, self.END, NEW_YORK) == 0  # 11:00 and 13:00 on 10 March

    def test_new_york_boundary(self) -> None:
        start = datetime(2024, 3, 11, 3, 30, tzinfo=UTC)  # 23:30 on 10 March in New York (EDT)
        end = datetime(2024, 3, 11, 4, 30, tzinfo=UTC)  # 00:30 on 11 March in New York
        assert days_between(start, end, NEW_YORK) == 1
        assert days_between(start, end, SHANGHAI) == 0

    def test_whole_days_and_direction(self) -> None:
        assert days_between(self.START, self.START + timedelta(days=5), SHANGHAI) == 5
        assert days_between(self.END, self.START, SHANGHAI) == -1
        assert days_between(self.START, self.START + timedelta(hours=23, minutes=59), "UTC") == 1  # calendar days


class TestHeldSince:
    def test_without_an_ongoing_hold(self, policy: Policy) -> None:
        s = state(policy, held_days=7)
        assert held_since(s, 3, NOW) == 4
        assert held_since(s, 7, NOW) == 0
        assert held_since(s, 0, NOW + timedelta(days=30)) == 7  # nothing grows without a hold

    def test_with_an_ongoing_hold(self, policy: Policy) -> None:
        started = datetime(2024, 4, 5, 16, 30, tzinfo=UTC)  # 00:30 on 6 April in Shanghai
        s = state(policy, held_days=3, hold_started_at=started)
        assert held_since(s, 1, NOW) == 3 + 4 - 1  # 6 to 10 April: 4 days ongoing
        assert held_since(s, 1, datetime(2024, 4, 5, 17, 0, tzinfo=UTC)) == 2  # same local day: none yet

    def test_ongoing_hold_counted_in_the_borrower_zone(self, policy: Policy) -> None:
        started = datetime(2024, 4, 9, 15, 0, tzinfo=UTC)  # 23:00 on 9 April in Shanghai
        now = datetime(2024, 4, 9, 17, 0, tzinfo=UTC)  # 01:00 on 10 April in Shanghai
        assert held_since(state(policy, hold_started_at=started), 0, now) == 1
        assert held_since(state(policy, loan(tz=NEW_YORK), hold_started_at=started), 0, now) == 0

    def test_hold_days_before_the_arrangement_are_not_counted(self, policy: Policy) -> None:
        # A hardship hold starts on 1 April; a promise is made on 10 April while it goes on and
        # records the hold days so far (9) as its held_at_start.
        hold_start = datetime(2024, 4, 1, 2, 0, tzinfo=UTC)
        s = state(policy, holds=[hold("hardship", hold_start)], hold_started_at=hold_start, held_days=0)
        held_at_start = held_so_far(s, NOW)
        assert held_at_start == 9
        assert held_since(s, held_at_start, NOW) == 0
        # two days later only those 2 days count, not the 9 before the promise
        assert held_since(s, held_at_start, NOW + timedelta(days=2)) == 2

    def test_plan_from_hardship_review_is_not_moved_by_the_earlier_hold(self, policy: Policy) -> None:
        # hold from 1 April; the review offers a plan on 10 April (recording the 9 held days so
        # far) and ends the hold, which adds days_between(1 April, 10 April) = 9 to held_days
        hold_start = datetime(2024, 4, 1, 2, 0, tzinfo=UTC)
        s = state(policy, hold_started_at=hold_start, held_days=0)
        held_at_start = held_so_far(s, NOW)
        s.held_days += days_between(hold_start, NOW, SHANGHAI)
        s.hold_started_at = None
        assert s.held_days == 9
        # no day of hold has passed since the plan was made, so its instalment on 20 April is
        # judged at the start of 24 April (3 grace days), not 9 days later
        assert held_since(s, held_at_start, NOW + timedelta(days=2)) == 0
        assert judged_at(s, date(2024, 4, 20), 3, held_at_start, NOW) == datetime(2024, 4, 23, 16, 0, tzinfo=UTC)


class TestHeldSoFar:
    def test_finished_holds_only(self, policy: Policy) -> None:
        assert held_so_far(state(policy), NOW) == 0
        assert held_so_far(state(policy, held_days=5), NOW + timedelta(days=40)) == 5

    def test_ongoing_hold_included(self, policy: Policy) -> None:
        started = datetime(2024, 4, 5, 16, 30, tzinfo=UTC)  # 00:30 on 6 April in Shanghai
        s = state(policy, held_days=3, hold_started_at=started)
        assert held_so_far(s, NOW) == 7  # 3 finished + 6..10 April
        assert held_so_far(s, started) == 3

    def test_ongoing_hold_in_the_borrower_zone(self, policy: Policy) -> None:
        started = datetime(2024, 4, 9, 15, 0, tzinfo=UTC)  # 23:00 on 9 April in Shanghai, 11:00 in New York
        now = datetime(2024, 4, 9, 17, 0, tzinfo=UTC)  # 01:00 on 10 April in Shanghai, 13:00 in New York
        assert held_so_far(state(policy, hold_started_at=started), now) == 1
        assert held_so_far(state(policy, loan(tz=NEW_YORK), hold_started_at=started), now) == 0


class TestJudgedAt:
    def test_start_of_the_day_after_grace_and_holds(self, policy: Policy) -> None:
        # 3 finished held days, an ongoing hold since 11 April (Shanghai), 1 held day before the
        # arrangement: 3 + 2 - 1 = 4 held days; due 20 April + 2 grace + 4 = 26 April, judged 27 April 00:00
        started = datetime(2024, 4, 10, 16, 30, tzinfo=UTC)  # 00:30 on 11 April in Shanghai
        now = datetime(2024, 4, 13, 2, 0, tzinfo=UTC)  # 10:00 on 13 April in Shanghai
        s = state(policy, held_days=3, hold_started_at=started)
        at = judged_at(s, date(2024, 4, 20), 2, 1, now)
        assert at == datetime(2024, 4, 26, 16, 0, tzinfo=UTC)
        assert at.tzinfo == ZoneInfo(SHANGHAI)
        assert at.replace(tzinfo=None) == datetime(2024, 4, 27, 0, 0)
        assert at.utcoffset() == timedelta(hours=8)

    def test_no_holds_no_grace(self, policy: Policy) -> None:
        at = judged_at(state(policy), date(2024, 5, 1), 0, 0, NOW)
        assert at == datetime(2024, 5, 1, 16, 0, tzinfo=UTC)  # 2 May 00:00 in Shanghai

    def test_new_york_across_daylight_saving(self, policy: Policy) -> None:
        s = state(policy, loan(tz=NEW_YORK))
        before = judged_at(s, date(2024, 3, 8), 0, 0, NOW)
        assert before == datetime(2024, 3, 9, 5, 0, tzinfo=UTC)  # 9 March 00:00 EST
        after = judged_at(s, date(2024, 3, 8), 2, 0, NOW)
        assert after == datetime(2024, 3, 11, 4, 0, tzinfo=UTC)  # 11 March 00:00 EDT
        assert after.tzinfo == ZoneInfo(NEW_YORK)
        assert after.replace(tzinfo=None) == datetime(2024, 3, 11, 0, 0)


# ---------------------------------------------------------------------------------------------
# credit_payments
# ---------------------------------------------------------------------------------------------


def status_of(arrangement: Promise | Plan | Settlement | None) -> str:
    """The arrangement's status, read afresh (after an assert on it, mypy would keep the narrowed
    status across a call that changes it)."""
    assert arrangement is not None
    return arrangement.status


def statuses(p: Plan) -> list[str]:
    return [i.status for i in p.instalments]


class TestCreditPayments:
    def test_nothing_open_nothing_happens(self, policy: Policy) -> None:
        s = state(policy, paid_total=D("5000.00"))
        assert credit_payments(s) == []
        assert s.counts == NegotiationCounts()

    def test_settlement_paid_when_payments_since_reach_it(self, policy: Policy) -> None:
        s = state(policy, settlement=settlement(paid_at_start="500.00"), paid_total=D("10512.49"))
        assert credit_payments(s) == []
        assert s.settlement is not None and s.settlement.status == "open"
        s.paid_total = D("10512.50")
        assert credit_payments(s) == [("settlement", "paid", "10012.50 paid by 2024-05-01")]
        assert status_of(s.settlement) == "paid"
        assert credit_payments(s) == []  # paid only once

    def test_settlement_not_credited_once_lapsed(self, policy: Policy) -> None:
        s = state(policy, settlement=settlement(status="lapsed"), paid_total=D("20000.00"))
        assert credit_payments(s) == []
        assert s.settlement is not None and s.settlement.status == "lapsed"

    def test_promise_kept(self, policy: Policy) -> None:
        s = state(policy, promise=promise(amount="1000.00", paid_at_start="200.00"), paid_total=D("1199.99"))
        assert credit_payments(s) == []
        assert s.promise is not None and s.promise.status == "open"
        assert s.counts.promises_kept == 0
        s.paid_total = D("1200.00")
        assert credit_payments(s) == [("promise", "kept", "1000.00 promised for 2024-04-20")]
        assert status_of(s.promise) == "kept"
        assert s.counts.promises_kept == 1
        s.paid_total = D("5000.00")
        assert credit_payments(s) == []
        assert s.counts.promises_kept == 1  # counted once

    def test_promise_overpaid_is_kept(self, policy: Policy) -> None:
        s = state(policy, promise=promise(amount="1000.00"), paid_total=D("3000.00"))
        assert credit_payments(s) == [("promise", "kept", "1000.00 promised for 2024-04-20")]
        assert s.counts == NegotiationCounts(promises_kept=1)

    def test_broken_promise_is_not_credited(self, policy: Policy) -> None:
        s = state(policy, promise=promise(status="broken"), paid_total=D("3000.00"))
        assert credit_payments(s) == []
        assert s.counts.promises_kept == 0

    def test_settlement_and_promise_in_order(self, policy: Policy) -> None:
        s = state(policy, settlement=settlement(), promise=promise(), paid_total=D("10012.50"))
        assert credit_payments(s) == [
            ("settlement", "paid", "10012.50 paid by 2024-05-01"),
            ("promise", "kept", "1000.00 promised for 2024-04-20"),
        ]

    def test_plan_instalments_kept_in_order(self, policy: Policy) -> None:
        s = state(policy, plan=plan(paid_at_start="1000.00"), paid_total=D("4708.32"))
        p = s.plan
        assert p is not None
        assert credit_payments(s) == []
        assert statuses(p) == ["pending", "pending", "pending"]

        s.paid_total = D("4708.33")  # 3708.33 since the plan
        assert credit_payments(s) == [("instalment", "kept", "#1 of 3708.33 due 2024-04-20")]
        assert statuses(p) == ["kept", "pending", "pending"]
        assert s.counts.instalments_kept == 1

        s.paid_total = D("8416.65")  # one cent short of the second
        assert credit_payments(s) == []
        assert statuses(p) == ["kept", "pending", "pending"]

        s.paid_total = D("8416.66")
        assert credit_payments(s) == [("instalment", "kept", "#2 of 3708.33 due 2024-05-20")]
        assert s.counts.instalments_kept == 2
        assert p.status == "active"

        s.paid_total = D("12125.00")
        assert credit_payments(s) == [
            ("instalment", "kept", "#3 of 3708.34 due 2024-06-20"),
            ("plan", "completed", "11125.00 paid"),
        ]
        assert statuses(p) == ["kept", "kept", "kept"]
        assert status_of(p) == "completed"
        assert s.counts.instalments_kept == 3
        assert credit_payments(s) == []  # a completed plan is not credited again

    def test_one_payment_can_keep_several(self, policy: Policy) -> None:
        s = state(policy, plan=plan(), paid_total=D("7500.00"))
        assert credit_payments(s) == [
            ("instalment", "kept", "#1 of 3708.33 due 2024-04-20"),
            ("instalment", "kept", "#2 of 3708.33 due 2024-05-20"),
        ]
        assert s.counts.instalments_kept == 2
        assert s.plan is not None and s.plan.status == "active"

    def test_missed_instalment_is_caught_up_not_kept(self, policy: Policy) -> None:
        p = plan(missed=1)
        p.instalments[0].status = "missed"
        s = state(policy, plan=p, paid_total=D("7416.66"), counts=NegotiationCounts(instalments_missed=1))
        assert credit_payments(s) == [
            ("instalment", "caught_up", "#1 of 3708.33 due 2024-04-20"),
            ("instalment", "kept", "#2 of 3708.33 due 2024-05-20"),
        ]
        assert statuses(p) == ["caught_up", "kept", "pending"]
        assert s.counts.instalments_kept == 1  # the caught-up one is not counted as kept
        assert s.counts.instalments_missed == 1
        assert p.missed == 1
        assert p.status == "active"

        s.paid_total = D("11125.00")
        assert credit_payments(s) == [
            ("instalment", "kept", "#3 of 3708.34 due 2024-06-20"),
            ("plan", "completed", "11125.00 paid"),
        ]
        assert statuses(p) == ["caught_up", "kept", "kept"]
        assert status_of(p) == "completed"
        assert s.counts.instalments_kept == 2

    def test_missed_instalment_short_stays_missed(self, policy: Policy) -> None:
        p = plan(missed=1)
        p.instalments[0].status = "missed"
        s = state(policy, plan=p, paid_total=D("3708.32"))
        assert credit_payments(s) == []
        assert statuses(p) == ["missed", "pending", "pending"]

    def test_down_payment_instalment(self, policy: Policy) -> None:
        items = plan_schedule(
            PlanProposal(instalments=3, first_due=date(2024, 4, 20), down_payment=D("1125.00")),
            total=OUTSTANDING,
            currency="CNY",
            today=TODAY,
            policy=policy,
        )
        s = state(policy, plan=plan(items=items), paid_total=D("1125.00"))
        assert credit_payments(s) == [("instalment", "kept", "#0 of 1125.00 due 2024-04-10")]
        assert s.plan is not None and statuses(s.plan) == ["kept", "pending", "pending", "pending"]

    def test_broken_plan_is_not_credited(self, policy: Policy) -> None:
        s = state(policy, plan=plan(status="broken"), paid_total=D("11125.00"))
        assert credit_payments(s) == []
        assert s.plan is not None and statuses(s.plan) == ["pending", "pending", "pending"]
        assert s.counts.instalments_kept == 0


# ---------------------------------------------------------------------------------------------
# judge_instalment
# ---------------------------------------------------------------------------------------------


class TestJudgeInstalment:
    def test_next_open_missed_then_plan_broken(self, policy: Policy) -> None:
        s = state(policy, plan=plan())
        p = s.plan
        assert p is not None
        assert judge_instalment(s, p, 2) == [("instalment", "missed", "#1 of 3708.33 due 2024-04-20")]
        assert statuses(p) == ["missed", "pending", "pending"]
        assert (p.missed, p.status) == (1, "active")
        assert s.counts == NegotiationCounts(instalments_missed=1)

        assert judge_instalment(s, p, 2) == [
            ("instalment", "missed", "#2 of 3708.33 due 2024-05-20"),
            ("plan", "broken", "2 instalments missed"),
        ]
        assert statuses(p) == ["missed", "missed", "pending"]
        assert (p.missed, p.status) == (2, "broken")
        assert s.counts == NegotiationCounts(instalments_missed=2, plans_broken=1)

    def test_skips_judged_instalments(self, policy: Policy) -> None:
        p = plan()
        p.instalments[0].status = "kept"
        s = state(policy, plan=p)
        assert judge_instalment(s, p, 2) == [("instalment", "missed", "#2 of 3708.33 due 2024-05-20")]
        assert statuses(p) == ["kept", "missed", "pending"]

    def test_earlier_misses_count_towards_the_limit(self, policy: Policy) -> None:
        p = plan(missed=1)
        p.instalments[0].status = "caught_up"
        s = state(policy, plan=p)
        notes = judge_instalment(s, p, 2)
        assert notes[-1] == ("plan", "broken", "2 instalments missed")
        assert p.status == "broken"

    def test_max_missed_one_breaks_at_once(self, policy: Policy) -> None:
        s = state(policy, plan=plan())
        assert s.plan is not None
        assert judge_instalment(s, s.plan, 1) == [
            ("instalment", "missed", "#1 of 3708.33 due 2024-04-20"),
            ("plan", "broken", "1 instalments missed"),
        ]
        assert s.counts.plans_broken == 1

    def test_higher_limit_keeps_the_plan(self, policy: Policy) -> None:
        s = state(policy, plan=plan())
        assert s.plan is not None
        for _ in range(2):
            judge_instalment(s, s.plan, 3)
        assert (s.plan.missed, s.plan.status, s.counts.plans_broken) == (2, "active", 0)

    def test_nothing_open(self, policy: Policy) -> None:
        p = plan()
        done: list[InstalmentStatus] = ["kept", "caught_up", "missed"]
        for inst, status in zip(p.instalments, done, strict=True):
            inst.status = status
        s = state(policy, plan=p)
        assert judge_instalment(s, p, 1) == []
        assert s.counts == NegotiationCounts()
        assert (p.missed, p.status) == (0, "active")


# ---------------------------------------------------------------------------------------------
# arrangement_info
# ---------------------------------------------------------------------------------------------


class TestArrangementInfo:
    def test_none_without_arrangements(self, policy: Policy) -> None:
        assert arrangement_info(state(policy), NOW) is None

    def test_none_when_all_finished(self, policy: Policy) -> None:
        s = state(
            policy,
            settlement=settlement(status="lapsed"),
            plan=plan(status="completed"),
            promise=promise(status="kept"),
        )
        assert arrangement_info(s, NOW) is None

    def test_open_settlement_first(self, policy: Policy) -> None:
        s = state(
            policy,
            settlement=settlement(paid_at_start="500.00"),
            plan=plan(),
            promise=promise(),
            paid_total=D("3500.00"),
        )
        assert arrangement_info(s, NOW) == ArrangementInfo(
            kind="settlement",
            ref="L-1/settlement/3",
            next_due_date=date(2024, 5, 1),
            next_due_amount=D("7012.50"),
            status="open",
        )

    def test_settlement_overpaid_shows_zero(self, policy: Policy) -> None:
        s = state(policy, settlement=settlement(), paid_total=D("20000.00"))
        info = arrangement_info(s, NOW)
        assert info is not None and info.next_due_amount == D("0")

    def test_active_plan_next(self, policy: Policy) -> None:
        s = state(
            policy,
            settlement=settlement(status="lapsed"),
            plan=plan(paid_at_start="200.00"),
            promise=promise(),
            paid_total=D("1200.00"),
        )
        assert arrangement_info(s, NOW) == ArrangementInfo(
            kind="plan",
            ref="L-1/plan/2",
            next_due_date=date(2024, 4, 20),
            next_due_amount=D("2708.33"),
            status="0 missed",
        )

    def test_plan_with_a_missed_instalment(self, policy: Policy) -> None:
        p = plan(paid_at_start="200.00", missed=1)
        p.instalments[0].status = "missed"
        s = state(policy, plan=p, paid_total=D("1200.00"))
        # the next open one is #2; what is due by then includes the missed #1
        assert arrangement_info(s, NOW) == ArrangementInfo(
            kind="plan",
            ref="L-1/plan/2",
            next_due_date=date(2024, 5, 20),
            next_due_amount=D("6416.66"),
            status="1 missed",
        )

    def test_plan_without_open_instalment(self, policy: Policy) -> None:
        p = plan(missed=1)
        done: list[InstalmentStatus] = ["kept", "kept", "missed"]
        for inst, status in zip(p.instalments, done, strict=True):
            inst.status = status
        info = arrangement_info(state(policy, plan=p, paid_total=D("7416.66")), NOW)
        assert info == ArrangementInfo(
            kind="plan", ref="L-1/plan/2", next_due_date=None, next_due_amount=None, status="1 missed"
        )

    def test_open_promise_last(self, policy: Policy) -> None:
        s = state(
            policy,
            settlement=settlement(status="cancelled"),
            plan=plan(status="broken"),
            promise=promise(amount="1000.00", paid_at_start="300.00"),
            paid_total=D("700.00"),
        )
        assert arrangement_info(s, NOW) == ArrangementInfo(
            kind="promise",
            ref="L-1/promise/1",
            next_due_date=date(2024, 4, 20),
            next_due_amount=D("600.00"),
            status="open",
        )

    def test_promise_overpaid_shows_zero(self, policy: Policy) -> None:
        s = state(policy, promise=promise(amount="1000.00"), paid_total=D("1500.00"))
        info = arrangement_info(s, NOW)
        assert info is not None and info.next_due_amount == D("0") and info.kind == "promise"


# ---------------------------------------------------------------------------------------------
# state hygiene
# ---------------------------------------------------------------------------------------------


def test_states_do_not_share_default_counts(policy: Policy) -> None:
    """The counters are a mutable default; one loan's counts must never leak into another's."""
    ln = loan()
    first = CollectionState(loan=ln, policy=policy, started_at=NOW, balance=ln.balance())
    second = CollectionState(loan=ln, policy=policy, started_at=NOW, balance=ln.balance())
    first.counts.promises_kept += 1
    assert second.counts.promises_kept == 0


def test_balance_total_of_the_helper_loan() -> None:
    assert loan().balance() == Balance(
        principal=D("10000.00"), interest=D("500.00"), fees=D("100.00"), penalties=D("525.00")
    )
    assert loan().balance().total == OUTSTANDING
