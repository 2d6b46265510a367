"""Log masking: phone numbers and e-mail addresses never reach a log line in full."""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(
    r"(?<![\w.%+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
)
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d(?:[ -]?\(?\d\)?){6,16}"  # international: +86 138 1234 5678, +8613812345678, +1 (415) 555-0100
    r"|\(?\d{2,4}\)?[ -]\d{3,4}[ -]\d{4}"  # grouped: 138-1234-5678, (021) 6123 4567
    r"|\d{8,15}"  # a bare run of digits, like 13812345678
    r")(?![\w.-])"  # not inside a longer token: amounts, dates, ids and UUIDs stay readable
)


def mask_personal_data(text: str) -> str:
    """Mask e-mail addresses (`l***@example.cn`) and phone numbers (`***5678`) in free text,
    the way `activities.rendering.mask` masks a single recipient."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub(lambda m: "***" + "".join(c for c in m.group(0) if c.isdigit())[-4:], text)


class MaskingFilter(logging.Filter):
    """Masks phone numbers and e-mail addresses in every record a handler emits: message,
    arguments and exception text. A log line is read by more people, and kept longer, than the
    database; the full number is never needed to follow what happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message, formattable = record.getMessage(), True
        except Exception:  # noqa: BLE001 - a malformed record is still emitted, and still masked
            message, formattable = f"{record.msg!s} (unformattable arguments: {record.args!r})", False
        masked = mask_personal_data(message)
        if masked != message or not formattable:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_personal_data(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_personal_data(record.stack_info)
        return True


def install_log_masking(logger: logging.Logger | None = None) -> MaskingFilter:
    """Add the masking filter to every handler of `logger` (default: the root logger). On the
    handlers, not the logger, because a logger's filters do not see records propagated from
    its children (temporalio's, activities')."""
    target = logger or logging.getLogger()
    existing = next((f for h in target.handlers for f in h.filters if isinstance(f, MaskingFilter)), None)
    masking = existing or MaskingFilter()
    for handler in target.handlers:
        if masking not in handler.filters:
            handler.addFilter(masking)
    return masking
