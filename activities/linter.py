"""The template linter: every message is civil and says what the rule set requires.

It lives beside its caller, the start activity (`activities.records` lints a policy's templates
when the policy loads), not in `models`: it parses templates with Jinja2 and reads the template
and word-list files.

A template is checked as SOURCE text, before rendering, so a template is refused once (when a
policy loads, and in the test suite) instead of each time a message would go out.

    purpose_of(source) -> str
    lint(source, *, language, kind, purpose, opt_out_required, banned, debt_words=None) -> list[str]
    lint_templates(texts, opt_out_channels, wordlists) -> dict[str, list[str]]

These are pure: the word lists and the texts are passed in. `lint` returns the problems found,
an empty list when the template is fine.

What is checked, by kind and purpose:

- every kind (sms, email, letter, task, document): no banned wording (abusive, threatening or
  humiliating) in the literal text. English entries match whole words, case-insensitively
  ("kill" does not match "skill"; an entry ending in `*` matches any word that starts with it,
  "arrest*" matches "arrested"); Chinese entries match as substrings. Only text that can reach
  the reader is checked (template text and string constants), not Jinja comments or variable
  names.
- sms, email, letter by purpose, declared on the first line as `{# purpose: <purpose> #}`:
  - `collection` (the default): `{{ lender_name }}`, an amount (`{{ amount_due }}` or
    `{{ instalment_amount }}`) and how to dispute (`{{ dispute_contact }}`);
  - `transactional` (payment and settlement confirmations): `{{ lender_name }}` only;
  - `third_party` (to someone other than the borrower, only to locate them): no debt variable
    (amounts, loan id, DPD, dates, instalments), nothing that identifies the lender's business or
    the borrower beyond `{{ borrower_first_name }}`, no literal money figure and no debt wording
    (`DEBT_WORDS`, per language); no dispute line needed.
- sms and email when the rule set requires an opt-out on that channel (US): `{{ opt_out }}`,
  whatever the purpose.
- email: the first line (after the purpose comment) is `Subject: ...`, as the renderer expects.
- tasks and documents (for collectors, agencies and courts): banned wording only.

File reading is kept apart, at the end of this module, in functions marked I/O
(`load_wordlist`, `load_wordlists`, `load_templates`, `lint_folder`). They read files only
when called, as `infra.loaders.load_policy` and `infra.loaders.load_ruleset` do; importing this
module reads nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from jinja2 import Environment, TemplateSyntaxError, nodes

PURPOSES: tuple[str, ...] = ("collection", "transactional", "third_party")
KINDS: tuple[str, ...] = ("sms", "email", "letter", "task", "document")
MESSAGE_KINDS: tuple[str, ...] = ("sms", "email", "letter")  # sent to a person; tasks/documents are internal
OPT_OUT_KINDS: tuple[str, ...] = ("sms", "email")

AMOUNT_VARIABLES: tuple[str, ...] = ("amount_due", "instalment_amount")

# Variables a third-party (locate) message must never use: the debt's figures and dates, and
# anything that names the borrower in full, the lender's business or how to dispute a debt.
DEBT_VARIABLES: frozenset[str] = frozenset(
    {
        "amount_due",
        "principal",
        "interest",
        "fees",
        "penalties",
        "paid_total",
        "currency",
        "loan_id",
        "dpd",
        "due_date",
        "deadline",
        "stage",
        "recall_date",
        "agency",
        "instalment_amount",
        "instalment_number",
        "instalment_due",
    }
)
IDENTITY_VARIABLES: frozenset[str] = frozenset(
    {
        "lender_name",
        "lender_website",
        "dispute_contact",
        "borrower_name",
        "borrower_address",
    }
)
THIRD_PARTY_FORBIDDEN: frozenset[str] = DEBT_VARIABLES | IDENTITY_VARIABLES

# Words that tell a third party there is a debt. Small on purpose: the banned lists (files under
# rulesets/wordlists/) are about tone; these are about disclosure, and apply to third parties only.
DEBT_WORDS: dict[str, tuple[str, ...]] = {
    "en": (
        "debt*",
        "overdue",
        "owe",
        "owes",
        "owed",
        "owing",
        "loan*",
        "lender*",
        "lending",
        "borrow*",
        "credit*",
        "collection*",
        "collector*",
        "arrears",
        "repay*",
        "payment*",
        "balance",
        "outstanding",
        "default*",
        "late fee*",
        "instalment*",
        "installment*",
    ),
    "zh": (
        "欠款",
        "欠债",
        "欠钱",
        "债务",
        "逾期",
        "催收",
        "催款",
        "借款",
        "贷款",
        "网贷",
        "借钱",
        "还款",
        "还钱",
        "账单",
        "本金",
        "利息",
        "罚息",
        "违约",
        "分期",
    ),
}

# A money figure written into the text itself: a currency sign or code next to digits, or
# digits followed by 元/块.
_MONEY = re.compile(
    r"[$€£¥￥]\s*{n}|\b(?:CNY|RMB|USD|GBP|EUR)\s*{n}|{n}\s*(?:CNY|RMB|USD|GBP|EUR)\b|{n}\s*[元块]".replace(
        "{n}", r"\d(?:[\d,.]*\d)?"
    ),
    re.IGNORECASE,
)
_PURPOSE = re.compile(r"^\s*\{#-?\s*purpose\s*:\s*([A-Za-z_][\w-]*)\s*-?#\}")
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_ENV = Environment()  # parsing only; never renders


# ------------------------------------------------------------------ pure checks


def purpose_of(source: str) -> str:
    """The purpose a template declares in a first-line comment `{# purpose: transactional #}`;
    `collection` when the first line declares none. The value is returned as written (lower
    case); `lint` refuses one it does not know."""
    first = source.lstrip("\ufeff").split("\n", 1)[0]
    match = _PURPOSE.match(first)
    return match.group(1).lower() if match else "collection"


def lint(
    source: str,
    *,
    language: str,
    kind: str,
    purpose: str,
    opt_out_required: bool,
    banned: Sequence[str],
    debt_words: Sequence[str] | None = None,
) -> list[str]:
    """Problems with one template's source; empty when it is fine.

    `banned` is the language's word list (`load_wordlist`); `debt_words` defaults to
    `DEBT_WORDS[language]` and matters only for third-party messages."""
    problems: list[str] = []
    if kind not in KINDS:
        return [f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})"]
    if purpose not in PURPOSES:
        problems.append(f"unknown purpose {purpose!r} (expected one of {', '.join(PURPOSES)})")
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return [f"template syntax error on line {exc.lineno}: {exc.message}"]
    text = _literal_text(tree)
    problems += [f"banned wording: {word!r}" for word in find_words(text, banned, language)]
    if kind not in MESSAGE_KINDS:
        return problems

    rendered = _output_variables(tree)
    used = _all_variables(tree)
    if kind == "email" and not _COMMENT.sub("", source).lstrip().startswith("Subject:"):
        problems.append("e-mail: the first line must be 'Subject: ...'")
    if purpose in ("collection", "transactional") and "lender_name" not in rendered:
        problems.append("missing lender identity: {{ lender_name }}")
    if purpose == "collection":
        if not rendered & set(AMOUNT_VARIABLES):
            problems.append("missing the amount: {{ amount_due }} or {{ instalment_amount }}")
        if "dispute_contact" not in rendered:
            problems.append("missing how to dispute: {{ dispute_contact }}")
    if purpose == "third_party":
        for name in sorted(used & THIRD_PARTY_FORBIDDEN):
            what = "names the debt" if name in DEBT_VARIABLES else "identifies the lender or the borrower"
            problems.append(f"third-party message {what}: {{{{ {name} }}}}")
        for figure in sorted({m.group(0).strip() for m in _MONEY.finditer(text)}):
            problems.append(f"third-party message names a debt figure: {figure!r}")
        words = DEBT_WORDS.get(language, ()) if debt_words is None else debt_words
        problems += [f"third-party message mentions the debt: {word!r}" for word in find_words(text, words, language)]
    if kind in OPT_OUT_KINDS and opt_out_required and "opt_out" not in rendered:
        problems.append(f"missing opt-out line for {kind}: {{{{ opt_out }}}}")
    return problems


def find_words(text: str, words: Iterable[str], language: str) -> list[str]:
    """The entries of `words` that occur in `text`, in list order: substrings for Chinese,
    whole words (case-insensitive; a trailing `*` matches any word ending) otherwise."""
    found: list[str] = []
    folded = text.casefold()
    for word in words:
        entry = word.strip()
        if not entry or entry in found:
            continue
        if language == "zh":
            hit = entry.rstrip("*").casefold() in folded
        else:
            hit = _word_pattern(entry).search(text) is not None
        if hit:
            found.append(entry)
    return found


def lint_templates(
    texts: Mapping[str, str], opt_out_channels: Sequence[str], wordlists: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Lint many templates. Keys of `texts` are paths like `zh/reminder_first.sms.j2` (language
    folder, name, kind); `wordlists` maps a language to its banned list. Returns only the
    templates with problems (an empty dict means all pass). A language without a word list is a
    problem, not a pass."""
    result: dict[str, list[str]] = {}
    for key in sorted(texts):
        source = texts[key]
        language, _, filename = key.replace("\\", "/").rpartition("/")
        language = language.rsplit("/", 1)[-1]
        parts = filename.split(".")
        if len(parts) != 3 or parts[2] != "j2":
            result[key] = [f"not a template name <name>.<kind>.j2: {filename!r}"]
            continue
        kind = parts[1]
        problems: list[str] = []
        if language not in wordlists:
            problems.append(f"no word list for language {language!r}")
        problems += lint(
            source,
            language=language,
            kind=kind,
            purpose=purpose_of(source),
            opt_out_required=kind in opt_out_channels,
            banned=wordlists.get(language, ()),
        )
        if problems:
            result[key] = problems
    return result


def _word_pattern(entry: str) -> re.Pattern[str]:
    prefix = entry.endswith("*")
    words = entry.rstrip("*").split()
    body = r"\s+".join(re.escape(w) for w in words)
    tail = r"\w*" if prefix else ""
    return re.compile(rf"(?<!\w){body}{tail}(?!\w)", re.IGNORECASE)


def _literal_text(tree: nodes.Template) -> str:
    """What the template can print by itself: its text and string constants (no comments, no
    variable names)."""
    parts = [n.data for n in tree.find_all(nodes.TemplateData)]
    parts += [n.value for n in tree.find_all(nodes.Const) if isinstance(n.value, str)]
    return "\n".join(parts)


def _output_variables(tree: nodes.Template) -> set[str]:
    """Variables printed by a `{{ ... }}` expression (possibly with filters)."""
    names: set[str] = set()
    for output in tree.find_all(nodes.Output):
        for child in output.nodes:
            if isinstance(child, nodes.TemplateData):
                continue
            names |= {n.name for n in child.find_all(nodes.Name) if n.ctx == "load"}
            if isinstance(child, nodes.Name) and child.ctx == "load":
                names.add(child.name)
    return names


def _all_variables(tree: nodes.Template) -> set[str]:
    """Every variable the template reads, printed or not (conditions, loops, filters)."""
    return {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}


# ------------------------------------------------------------------ I/O: reading files


def load_wordlist(path: Path) -> list[str]:
    """I/O. Entries of a word list file: one per line; `#` starts a comment (a whole line, or the
    rest of a line after whitespace); blank lines and repeats are skipped."""
    entries: list[str] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        entry = re.sub(r"(^|\s)#.*$", "", line).strip()
        if entry and entry not in entries:
            entries.append(entry)
    return entries


def load_wordlists(folder: Path) -> dict[str, list[str]]:
    """I/O. `{language: entries}` for every `<language>.txt` in `folder`."""
    return {path.stem: load_wordlist(path) for path in sorted(Path(folder).glob("*.txt"))}


def load_templates(folder: Path, names: set[str] | None = None) -> dict[str, str]:
    """I/O. `{"<language>/<name>.<kind>.j2": source}` for the templates under `folder`
    (`folder/<language>/*.j2`), only those whose `<name>` is in `names` when given."""
    texts: dict[str, str] = {}
    for path in sorted(Path(folder).glob("*/*.j2")):
        if names is not None and path.name.split(".", 1)[0] not in names:
            continue
        texts[f"{path.parent.name}/{path.name}"] = path.read_text(encoding="utf-8")
    return texts


def lint_folder(
    folder: Path, ruleset_opt_out_channels: Sequence[str], wordlists_dir: Path, names: set[str] | None = None
) -> dict[str, list[str]]:
    """I/O. Lint the templates under `folder` (all, or those named in `names`, e.g. the templates
    of a policy's steps) with the word lists in `wordlists_dir`, under a rule set whose
    `opt_out_required` is `ruleset_opt_out_channels`. Returns only the templates with problems,
    keyed `<language>/<name>.<kind>.j2`. Templates named in `names` but missing are not
    reported here (a missing template fails its step at run time)."""
    return lint_templates(load_templates(folder, names), ruleset_opt_out_channels, load_wordlists(wordlists_dir))
