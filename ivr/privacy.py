"""Masking of personal data (UU PDP): card numbers, NIKs, birth dates, caller numbers.

Records and transcripts mask what they hold; as a second line of defence every log line
goes through ``RedactingFilter``, which masks any run of 8 or more digits — except call
ids, which must stay readable so that a log line can be matched to its record: Asterisk's
uniqueid (``[system-]EPOCH.SEQUENCE``: 10 digits, a dot, digits) and ``ivr-<uuid4>``.
"""
from __future__ import annotations

import logging
import re

# A call id is kept whole; any other run of 8 or more digits is masked. An identifier
# (13 or 16 digits), a phone number or a birth date never looks like an epoch, a dot and
# a sequence number with nothing else around it.
_CALL_ID_OR_DIGITS = re.compile(
    r"(?P<call_id>(?<![\d.])\d{10}\.\d{1,9}(?![\d.])"
    r"|\bivr-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b)"
    r"|(?P<digits>\d{8,})")


def mask_number(digits: str) -> str:
    """``0001234567890`` → ``0001******890``: the first 4 and last 3 stay when at least
    half of the number is hidden; shorter numbers keep only their last 2."""
    if len(digits) >= 10:
        return digits[:4] + "*" * (len(digits) - 7) + digits[-3:]
    if len(digits) > 2:
        return "*" * (len(digits) - 2) + digits[-2:]
    return "*" * len(digits)


def mask_caller(caller: str) -> str:
    """A caller id: digits are masked, names like ``unknown`` or ``anonymous`` kept."""
    prefix = "+" if caller.startswith("+") else ""
    rest = caller[len(prefix):]
    return prefix + mask_number(rest) if rest.isdigit() else caller


def redact(text: str) -> str:
    return _CALL_ID_OR_DIGITS.sub(
        lambda m: m.group() if m.group("call_id") else mask_number(m.group()), text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def configure_logging(level: str = "INFO", stream=None) -> None:
    """Root logging for the commands: one stream handler, every line redacted."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite logs every statement (with its parameters) at DEBUG: keep it quiet
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
