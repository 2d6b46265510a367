"""The figures a template may use, computed from the workflow state (pure, so workflows
can build them and tests can check them)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from models.loan import Stage
from models.money import quantize
from models.schedule import days_past_due, local_date
from models.status import CollectionState

# The opt-out line of every SMS and e-mail (`{{ opt_out }}`), in the borrower's language; short
# enough for an SMS. Rule sets such as the US one (Regulation F 1006.6(e)) require it; it goes out
# under every rule set. The templates repeat it as their fallback (`default(...)`) for message
# requests built before the variable existed; tests/unit/test_linter.py keeps the two equal.
OPT_OUT: dict[str, str] = {
    "zh": "回复TD退订",
    "en": "Reply STOP to opt out of texts, UNSUBSCRIBE to stop e-mails.",
}

# Chinese compound (two-character) family names; any other Chinese name has a one-character one.
_COMPOUND_SURNAMES = frozenset(
    {
        "欧阳",
        "司马",
        "诸葛",
        "上官",
        "东方",
        "皇甫",
        "尉迟",
        "公孙",
        "慕容",
        "令狐",
        "司徒",
        "夏侯",
        "长孙",
        "宇文",
        "轩辕",
        "端木",
        "澹台",
        "南宫",
        "西门",
        "呼延",
        "独孤",
        "闻人",
        "申屠",
        "万俟",
    }
)


def first_name(name: str) -> str:
    """The given name alone, for messages to third parties (`{{ borrower_first_name }}`): enough
    for someone who knows the borrower to recognise whom we mean, without the full name.

    - Chinese names (Han characters) put the family name first: the first character, or the
      first two for a compound family name (欧阳, 司马, ...) when the name is at least three
      characters long. The given name is what follows: 李明 -> 明, 张小红 -> 小红,
      欧阳娜娜 -> 娜娜. A one-character name stays as it is. Names written with a middle dot
      (transliterated, given name first: 阿依古丽·买买提) give the part before the dot.
    - Other names (Latin script) put the given name first: the first word ("Jane Q. Doe" ->
      "Jane"). A pinyin name written family name first ("Li Ming") therefore gives the family
      name; Chinese borrowers' names are recorded in Han characters.
    The full name is never the answer for a name of two or more parts.
    """
    name = " ".join(name.split())
    if not name:
        return ""
    if "·" in name:
        return name.split("·", 1)[0].strip() or name
    if all(_is_han(ch) or ch == " " for ch in name):
        name = name.replace(" ", "")  # 李 明 is still 李明
        if len(name) >= 3 and name[:2] in _COMPOUND_SURNAMES:
            return name[2:]
        return name[1:] if len(name) >= 2 else name
    return name.split(" ", 1)[0]


def _is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\uf900" <= ch <= "\ufaff"


def template_context(
    state: CollectionState, now: datetime, stage: Stage, deadline_days: int | None = None, **extra: str
) -> dict[str, str]:
    """Strings for templates: borrower, amounts by component, dates in the borrower's zone, the
    lender's details and the opt-out line in the borrower's language (`opt_out`).
    `borrower_first_name` is the given name only (see `first_name`), the one thing a third-party
    (locate) message may say about the borrower."""
    loan, policy, balance = state.loan, state.policy, state.balance
    tz = loan.borrower.timezone
    today = local_date(now, tz)

    def money(value: Decimal) -> str:
        return f"{quantize(value, loan.currency):,}"

    context = {
        "loan_id": loan.loan_id,
        "borrower_name": loan.borrower.name,
        "borrower_first_name": first_name(loan.borrower.name),
        "borrower_address": loan.borrower.address,
        "currency": loan.currency,
        "amount_due": money(balance.total),
        "principal": money(balance.principal),
        "interest": money(balance.interest),
        "fees": money(balance.fees),
        "penalties": money(balance.penalties),
        "paid_total": money(state.paid_total),
        "due_date": loan.due_date.isoformat(),
        "dpd": str(days_past_due(now, loan.due_date, tz, state.paused_days)),
        "today": today.isoformat(),
        "stage": str(stage),
        "lender_name": policy.lender.name,
        "lender_phone": policy.lender.phone,
        "lender_website": policy.lender.website,
        "dispute_contact": policy.lender.dispute_contact,
        "opt_out": OPT_OUT.get(loan.borrower.language, OPT_OUT["en"]),
    }
    if deadline_days is not None:
        context["deadline"] = (today + timedelta(days=deadline_days)).isoformat()
    return {**context, **extra}
