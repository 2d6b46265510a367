"""Template rendering: every message and document comes from a reviewed template file."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from temporalio.exceptions import ApplicationError


class Renderer:
    """Renders `templates/<language>/<name>.<kind>.j2` with the loan's figures.

    Undefined variables are errors, never blanks: a letter with a missing amount must not go out.
    """

    def __init__(self, folder: Path) -> None:
        self._env = Environment(
            loader=FileSystemLoader(str(folder)),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )

    def render(self, name: str, kind: str, language: str, context: dict[str, str]) -> tuple[str, str]:
        """Returns (subject, body); the subject is the first line of an e-mail template."""
        path = f"{language}/{name}.{kind}.j2"
        try:
            text = self._env.get_template(path).render(**context).strip()
        except TemplateNotFound as exc:
            raise ApplicationError(f"template {path} not found", non_retryable=True) from exc
        except TemplateError as exc:
            raise ApplicationError(f"template {path}: {exc}", non_retryable=True) from exc
        if kind == "email" and text.startswith("Subject:"):
            subject, _, body = text.partition("\n")
            return subject.removeprefix("Subject:").strip(), body.strip()
        return "", text


def mask(recipient: str) -> str:
    """Mask a phone number, e-mail or address for logs: keep just enough to tell them apart."""
    if "@" in recipient:
        user, _, domain = recipient.partition("@")
        return f"{user[:1]}***@{domain}"
    digits = [c for c in recipient if c.isdigit()]
    if len(digits) >= 7 and len(digits) >= len(recipient) * 0.6:
        return f"***{''.join(digits[-4:])}"
    return f"{recipient[:3]}***" if recipient else ""
