"""The template linter: bad templates are refused with the expected problem, every shipped
template passes under every rule set, word matching and purpose parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from jinja2 import Environment, nodes

from activities.linter import (
    DEBT_WORDS,
    find_words,
    lint,
    lint_folder,
    lint_templates,
    load_templates,
    load_wordlist,
    load_wordlists,
    purpose_of,
)
from activities.rendering import Renderer
from infra.loaders import load_policy, load_ruleset
from infra.settings import settings
from models.context import OPT_OUT, first_name, template_context
from models.loan import Stage
from models.status import CollectionState
from tests.helpers import ROOT, TEMPLATES_BAD, make_loan

TEMPLATES = settings().templates_dir
BAD = TEMPLATES_BAD
RULESETS = ROOT / "rulesets"
WORDLISTS = RULESETS / "wordlists"
US_OPT_OUT = ["sms", "email"]

# Every bad template and exactly the problems it must be refused with (under any rule set; the
# opt-out ones only where the rule set asks for an opt-out).
EXPECTED_BAD: dict[str, list[str]] = {
    "en/threat_violence.sms.j2": ["banned wording: 'we know where you live'", "banned wording: 'or else'"],
    "zh/threat_violence.sms.j2": ["banned wording: '后果自负'", "banned wording: '出门小心'"],
    "en/threat_arrest.letter.j2": ["banned wording: 'arrest*'", "banned wording: 'jail*'"],
    "zh/threat_arrest.letter.j2": ["banned wording: '刑事责任'", "banned wording: '报警'"],
    "en/insult.sms.j2": ["banned wording: 'deadbeat*'"],
    "zh/insult.sms.j2": ["banned wording: '老赖'"],
    "en/shaming.email.j2": ["banned wording: 'tell your employer'", "banned wording: 'tell your neighbours'"],
    "zh/shaming.email.j2": ["banned wording: '曝光'", "banned wording: '你单位'", "banned wording: '朋友圈'"],
    "en/abusive_call.task.j2": ["banned wording: 'call your employer'", "banned wording: 'thief'"],
    "zh/abusive_call.task.j2": ["banned wording: '你的家人'", "banned wording: '骗子'"],
    "en/missing_lender.sms.j2": ["missing lender identity: {{ lender_name }}"],
    "zh/missing_lender.sms.j2": ["missing lender identity: {{ lender_name }}"],
    "en/missing_amount.sms.j2": ["missing the amount: {{ amount_due }} or {{ instalment_amount }}"],
    "zh/missing_amount.sms.j2": ["missing the amount: {{ amount_due }} or {{ instalment_amount }}"],
    "en/missing_dispute.letter.j2": ["missing how to dispute: {{ dispute_contact }}"],
    "zh/missing_dispute.letter.j2": ["missing how to dispute: {{ dispute_contact }}"],
    "en/third_party_debt.sms.j2": [
        "third-party message names the debt: {{ amount_due }}",
        "third-party message mentions the debt: 'overdue'",
    ],
    "zh/third_party_debt.sms.j2": [
        "third-party message names the debt: {{ amount_due }}",
        "third-party message mentions the debt: '欠款'",
    ],
    "en/third_party_lender.sms.j2": [
        "third-party message identifies the lender or the borrower: {{ borrower_name }}",
        "third-party message identifies the lender or the borrower: {{ lender_name }}",
    ],
    "zh/third_party_lender.sms.j2": [
        "third-party message identifies the lender or the borrower: {{ borrower_name }}",
        "third-party message identifies the lender or the borrower: {{ lender_name }}",
    ],
}
OPT_OUT_ONLY = {  # fine unless the rule set requires an opt-out on texts (US)
    "en/no_opt_out.sms.j2": ["missing opt-out line for sms: {{ opt_out }}"],
    "zh/no_opt_out.sms.j2": ["missing opt-out line for sms: {{ opt_out }}"],
}


def ruleset_channels(name: str) -> list[str]:
    return list(load_ruleset(name, RULESETS).opt_out_required)


def check(
    source: str,
    *,
    language: str = "en",
    kind: str = "sms",
    opt_out_required: bool = False,
    banned: list[str] | None = None,
) -> list[str]:
    return lint(
        source,
        language=language,
        kind=kind,
        purpose=purpose_of(source),
        opt_out_required=opt_out_required,
        banned=banned if banned is not None else [],
    )


GOOD_EN = "{{ lender_name }}: {{ amount_due }} {{ currency }} due. Dispute: {{ dispute_contact }}. {{ opt_out }}"


# ------------------------------------------------------------------ bad templates


def test_every_bad_fixture_is_listed() -> None:
    on_disk = set(load_templates(BAD))
    assert on_disk == set(EXPECTED_BAD) | set(OPT_OUT_ONLY)
    assert len(on_disk) >= 8


@pytest.mark.parametrize("ruleset", ["cn", "uk"])
def test_bad_templates_are_refused_with_the_expected_problem(ruleset: str) -> None:
    assert lint_folder(BAD, ruleset_channels(ruleset), WORDLISTS) == EXPECTED_BAD


def test_us_rules_also_refuse_texts_without_an_opt_out() -> None:
    assert ruleset_channels("us") == US_OPT_OUT
    assert lint_folder(BAD, ruleset_channels("us"), WORDLISTS) == {**EXPECTED_BAD, **OPT_OUT_ONLY}


def test_lint_folder_can_lint_only_named_templates() -> None:
    problems = lint_folder(BAD, US_OPT_OUT, WORDLISTS, names={"insult", "no_opt_out"})
    assert set(problems) == {"en/insult.sms.j2", "zh/insult.sms.j2", "en/no_opt_out.sms.j2", "zh/no_opt_out.sms.j2"}


def test_lint_templates_is_pure_and_needs_a_word_list_per_language() -> None:
    texts = {"en/x.sms.j2": GOOD_EN, "fr/x.sms.j2": GOOD_EN, "en/x.fax.j2": GOOD_EN}
    result = lint_templates(texts, US_OPT_OUT, {"en": ["kill"]})
    assert result == {
        "en/x.fax.j2": ["unknown kind 'fax' (expected one of sms, email, letter, task, document)"],
        "fr/x.sms.j2": ["no word list for language 'fr'"],
    }


# ------------------------------------------------------------------ shipped templates


@pytest.mark.parametrize("ruleset", ["cn", "us", "uk"])
def test_every_shipped_template_passes_under_every_rule_set(ruleset: str) -> None:
    texts = load_templates(TEMPLATES)
    assert len(texts) >= 30 and {k.split("/")[0] for k in texts} == {"zh", "en"}
    assert lint_folder(TEMPLATES, ruleset_channels(ruleset), WORDLISTS) == {}


def test_shipped_purposes() -> None:
    purposes = {key: purpose_of(text) for key, text in load_templates(TEMPLATES).items()}
    for language in ("zh", "en"):
        assert purposes[f"{language}/paid_confirmation.sms.j2"] == "transactional"
        assert purposes[f"{language}/settled_confirmation.sms.j2"] == "transactional"
        assert purposes[f"{language}/locate_request.sms.j2"] == "third_party"
        assert purposes[f"{language}/reminder_first.sms.j2"] == "collection"


def test_every_shipped_text_and_email_carries_the_opt_out_and_its_fallback_matches_the_context() -> None:
    """Templates print `{{ opt_out | default("...") }}`: the fallback (for message requests built
    before the variable existed) must be the same line `template_context` gives."""
    env = Environment()
    for key, source in load_templates(TEMPLATES).items():
        if key.split(".")[-2] not in ("sms", "email"):
            continue
        filters = [
            f
            for f in env.parse(source).find_all(nodes.Filter)
            if f.name == "default" and isinstance(f.node, nodes.Name) and f.node.name == "opt_out"
        ]
        assert len(filters) == 1, key
        assert [a.value if isinstance(a, nodes.Const) else a for a in filters[0].args] == [
            OPT_OUT[key.split("/")[0]]
        ], key


def full_context(name: str = "李明") -> dict[str, str]:
    policy = load_policy("default", settings().policies_dir)
    loan = make_loan("L-TPL", dpd=31)
    loan = loan.model_copy(update={"borrower": loan.borrower.model_copy(update={"name": name})})
    state = CollectionState(loan=loan, policy=policy, started_at=datetime.now(UTC), balance=loan.balance())
    return template_context(state, datetime.now(UTC), Stage.middle, deadline_days=15)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_locate_request_asks_for_a_call_back_and_says_nothing_about_the_debt(language: str) -> None:
    context = full_context("张小红")
    _, body = Renderer(TEMPLATES).render("locate_request", "sms", language, context)
    assert "小红" in body and "张小红" not in body
    assert context["lender_phone"] in body
    assert OPT_OUT["zh"] in body  # the borrower's language decides the opt-out line
    for secret in (
        "L-TPL",
        context["amount_due"],
        context["lender_name"],
        "Lending",
        context["dispute_contact"],
        context["due_date"],
        context["borrower_address"],
    ):
        assert secret not in body, secret
    assert find_words(body, DEBT_WORDS[language], language) == []


# ------------------------------------------------------------------ template context


def test_template_context_gives_the_opt_out_and_the_first_name() -> None:
    context = full_context()
    assert context["opt_out"] == OPT_OUT["zh"] == "回复TD退订"
    assert context["borrower_first_name"] == "明"
    assert len(OPT_OUT["en"]) <= 70 and "STOP" in OPT_OUT["en"]


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("李明", "明"),
        ("张小红", "小红"),
        ("欧阳娜娜", "娜娜"),
        ("李 明", "明"),
        ("王", "王"),
        ("阿依古丽·买买提", "阿依古丽"),
        ("Jane Q. Doe", "Jane"),
        ("  John   Smith ", "John"),
        ("Cher", "Cher"),
    ],
)
def test_first_name(name: str, first: str) -> None:
    assert first_name(name) == first


# ------------------------------------------------------------------ word matching


def test_english_words_match_whole_words_case_insensitively() -> None:
    assert find_words("Sharpen your skills", ["kill"], "en") == []
    assert find_words("We will KILL you", ["kill"], "en") == ["kill"]
    assert find_words("killing", ["kill"], "en") == []
    assert find_words("killing", ["kill*"], "en") == ["kill*"]
    assert find_words("a skilled team", ["kill*"], "en") == []
    assert find_words("you were Arrested", ["arrest*"], "en") == ["arrest*"]
    assert find_words("tell\n  your EMPLOYER", ["tell your employer"], "en") == ["tell your employer"]
    assert find_words("tell your employers' names", ["tell your employer"], "en") == []
    assert (
        check("{{ lender_name }}: our skilled staff help. {{ amount_due }} {{ dispute_contact }}", banned=["kill"])
        == []
    )


def test_chinese_words_match_as_substrings() -> None:
    assert find_words("你这个老赖！", ["老赖"], "zh") == ["老赖"]  # noqa: RUF001 - Chinese punctuation
    assert find_words("请联系您的客户经理", ["老赖", "骗子"], "zh") == []


def test_only_printable_text_is_checked_not_comments_or_variable_names() -> None:
    source = "{# never write idiot #}{{ lender_name }} {{ amount_due }} {{ dispute_contact }}"
    assert check(source, banned=["idiot"]) == []
    assert check('{{ lender_name }} {{ amount_due }} {{ dispute_contact }} {{ "idiot" }}', banned=["idiot"]) == [
        "banned wording: 'idiot'"
    ]
    # "lender" is a debt word but `lender_phone` is a variable name, not text
    assert check("{# purpose: third_party #}Call {{ lender_phone }}", banned=[]) == []


def test_wordlists_load_with_comments_and_have_30_to_60_entries(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("# header\n\nkill*\n  or else  # a trailing comment\nkill*\n# end\n", encoding="utf-8")
    assert load_wordlist(path) == ["kill*", "or else"]
    lists = load_wordlists(WORDLISTS)
    assert set(lists) == {"zh", "en"}
    for language, words in lists.items():
        assert 30 <= len(words) <= 60, language
        assert all(not w.startswith("#") for w in words)
    # describing the rule to a collector is not itself abusive
    assert find_words("Never threaten or use abusive language.", lists["en"], "en") == []
    assert find_words("不得威胁或使用侮辱性语言，不得骚扰家人或邻居。", lists["zh"], "zh") == []  # noqa: RUF001 - Chinese punctuation


# ------------------------------------------------------------------ purposes and requirements


@pytest.mark.parametrize(
    ("source", "purpose"),
    [
        ("{# purpose: transactional #}\nThanks", "transactional"),
        ("{#purpose:third_party#}Hi", "third_party"),
        ("{#- purpose: Transactional -#}\nThanks", "transactional"),
        ("\ufeff{# purpose: third_party #}\nHi", "third_party"),
        ("Hello {{ lender_name }}", "collection"),
        ("{# a note #}\n{# purpose: transactional #}\nHi", "collection"),  # first line only
        ("Hi\n{# purpose: transactional #}", "collection"),
        ("", "collection"),
    ],
)
def test_purpose_of(source: str, purpose: str) -> None:
    assert purpose_of(source) == purpose


def test_unknown_purpose_kind_and_syntax_errors_are_problems() -> None:
    assert check("{# purpose: marketing #}\n" + GOOD_EN) == [
        "unknown purpose 'marketing' (expected one of collection, transactional, third_party)"
    ]
    assert lint(GOOD_EN, language="en", kind="fax", purpose="collection", opt_out_required=False, banned=[]) == [
        "unknown kind 'fax' (expected one of sms, email, letter, task, document)"
    ]
    assert check("{{ lender_name ")[0].startswith("template syntax error on line 1")


def test_transactional_needs_only_the_lender() -> None:
    assert check("{# purpose: transactional #}\n{{ lender_name }}: paid, thank you.") == []
    assert check("{# purpose: transactional #}\nPaid, thank you.") == ["missing lender identity: {{ lender_name }}"]


def test_instalment_amount_counts_as_the_amount_and_filters_are_allowed() -> None:
    assert (
        check(
            "{{ lender_name|upper }} {{ instalment_amount }} {{ dispute_contact }} {{ opt_out | default('x') }}",
            opt_out_required=True,
        )
        == []
    )


def test_tasks_and_documents_are_checked_for_banned_words_only() -> None:
    assert check("Call loan {{ loan_id }}.", kind="task") == []
    assert check("Claim for {{ amount_due }}.", kind="document") == []
    assert check("Tell them they are a deadbeat.", kind="document", banned=["deadbeat*"]) == [
        "banned wording: 'deadbeat*'"
    ]


def test_email_needs_a_subject_line_and_the_opt_out_under_us_rules() -> None:
    body = "\n{{ lender_name }} {{ amount_due }} {{ dispute_contact }}"
    assert check("Subject: Loan" + body, kind="email") == []
    assert check("{# purpose: collection #}\nSubject: Loan" + body, kind="email") == []
    assert check("Hello" + body, kind="email") == ["e-mail: the first line must be 'Subject: ...'"]
    assert check("Subject: Loan" + body, kind="email", opt_out_required=True) == [
        "missing opt-out line for email: {{ opt_out }}"
    ]
    assert check("Subject: Loan" + body, kind="letter", opt_out_required=True) == []  # letters need none


def test_third_party_messages_never_carry_the_debt() -> None:
    head = "{# purpose: third_party #}\nPlease ask {{ borrower_first_name }} to call {{ lender_phone }}. "
    assert check(head) == []
    assert check(head + "{% if dpd %}soon{% endif %}") == ["third-party message names the debt: {{ dpd }}"]
    assert check(head + "Ref {{ loan_id }}") == ["third-party message names the debt: {{ loan_id }}"]
    assert check(head + "It is about $500.") == ["third-party message names a debt figure: '$500'"]
    assert check(head + "It is about a Loan.") == ["third-party message mentions the debt: 'loan*'"]
    zh = "{# purpose: third_party #}\n请转告{{ borrower_first_name }}致电{{ lender_phone }}。"
    assert check(zh, language="zh") == []
    assert check(zh + "关于500元还款", language="zh") == [
        "third-party message names a debt figure: '500元'",
        "third-party message mentions the debt: '还款'",
    ]
    assert check(zh + "逾期", language="zh", kind="sms", opt_out_required=True) == [
        "third-party message mentions the debt: '逾期'",
        "missing opt-out line for sms: {{ opt_out }}",
    ]
    # a custom debt list replaces the built-in one
    assert (
        lint(
            head + "about the loan",
            language="en",
            kind="sms",
            purpose="third_party",
            opt_out_required=False,
            banned=[],
            debt_words=["parcel"],
        )
        == []
    )
