"""Reads every log line and call record the suite wrote (it runs last: files are collected
in name order) and finds no clear card number, NIK or birth date.

It also makes calls of its own first, so that it has something to read even when run alone.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ivr.emulator import place_call
from ivr.membership.demo import PARTICIPANTS

EVIDENCE = Path(os.environ["IVR_TEST_EVIDENCE"])


def secrets() -> set[str]:
    found = set()
    for body in PARTICIPANTS:
        born = body["birth_date"]              # 1990-08-17
        y, m, d = born.split("-")
        found |= {body["card_number"], body["nik"], born, f"{d}{m}{y}", f"{d}-{m}-{y}",
                  f"{d}/{m}/{y}"}
    return found


async def test_logs_and_records_hold_no_clear_identifier_or_birth_date(hotline):
    server, app = hotline
    for body in PARTICIPANTS[:6]:
        y, m, d = body["birth_date"].split("-")
        phone = body["phone_last4"] or "0000"     # a NIK also asks for the phone's last 4
        for answers in (f"{body['card_number']}# 1 {d}{m}{y}",
                        f"{body['nik']} 1 {d}{m}{y} {phone}"):
            await place_call("127.0.0.1", server.port, f"1 {answers} 2 0")
    logging.getLogger("ivr.test").info("a careless line with %s", PARTICIPANTS[0]["nik"])
    assert app.records.flush()
    for handler in logging.getLogger().handlers:
        handler.flush()

    files = [p for p in EVIDENCE.iterdir() if p.suffix in (".log", ".jsonl")]
    records = [p for p in files if p.suffix == ".jsonl"]
    assert records and any(p.stat().st_size for p in records)
    assert (EVIDENCE / "suite.log").stat().st_size > 0
    leaks = []
    wanted = secrets()
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for secret in wanted:
            if re.search(rf"(?<!\d){re.escape(secret)}(?!\d)", text):
                leaks.append((path.name, secret[:4] + "…"))
    assert leaks == []
