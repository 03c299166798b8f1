"""Finding 7: log lines keep call ids readable (to match them with records) while every
identifier is still masked."""
from __future__ import annotations

import io
import logging

from ivr.privacy import configure_logging, redact


def test_call_ids_stay_readable_identifiers_do_not():
    line = ("call 1796123003.1 ended; call sandbox-1796123003.42 too; call "
            "ivr-0f8e1234-5678-4abc-9def-123456789012; card 0001234567890 NIK "
            "3174015708900003 born 17081990 phone 081234567890")
    clean = redact(line)
    assert "1796123003.1 " in clean
    assert "sandbox-1796123003.42" in clean
    assert "ivr-0f8e1234-5678-4abc-9def-123456789012" in clean
    for secret in ("0001234567890", "3174015708900003", "17081990", "081234567890"):
        assert secret not in clean
    assert "0001******890" in clean


def test_numbers_that_only_resemble_a_call_id_are_masked():
    # a card number with a dot after it, a 12-digit run with a dotted tail, a version-like
    # chain of numbers: none is an Asterisk uniqueid
    for text in ("0001234567890.1", "081234567890.5", "1796123003.1.2", "11796123003.1"):
        assert redact(text) != text


def test_the_log_filter_keeps_the_call_id():
    stream = io.StringIO()
    configure_logging("INFO", stream)
    try:
        logging.getLogger("ivr.app").info("call %s ended: card %s", "1796123003.1",
                                          "0001234567890")
    finally:
        configure_logging("INFO")
    text = stream.getvalue()
    assert "call 1796123003.1 ended" in text and "0001234567890" not in text
