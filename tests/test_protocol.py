"""Whole calls over TCP: the emulator speaks as Asterisk 22 does to the hotline server, which
asks the reference membership service (a separate process) over HTTP on loopback."""
from __future__ import annotations

import json
from pathlib import Path

from ivr.emulator import place_call
from ivr.names import P
from prompts import load_catalog

CARD, BORN = "0001234567890", "17081990"


def records(settings) -> list[dict]:
    path = Path(settings.call_records)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def call(hotline, keys, **kwargs):
    server, app = hotline
    result = await place_call("127.0.0.1", server.port, keys, **kwargs)
    assert app.records.flush()
    return result


def record_of(settings, call_id) -> dict:
    (record,) = [r for r in records(settings) if r["call_id"] == call_id]
    return record


async def test_status_and_billing_call_leaves_variables_and_a_record(hotline, settings):
    c = await call(hotline, f"1 {CARD}# 1 {BORN}")
    assert c.ended == "server closed" and not c.hung_up
    assert c.variables == {"IVR_OUTCOME": "completed", "IVR_TRANSFER_REASON": "",
                           "IVR_VERIFIED": "1", "IVR_CARD": CARD,
                           "IVR_MEMBER_STATUS": "AKTIF", "IVR_CALL_ID": c.call_id}
    # inherited by the agent's channel
    assert all(cmd.startswith("SET VARIABLE __IVR_") for cmd in c.commands
               if cmd.startswith("SET VARIABLE") and "language" not in cmd)
    r = record_of(settings, c.call_id)
    assert r["outcome"] == "completed" and r["verified"] is True
    assert r["member_status"] == "AKTIF" and r["transfer_reason"] is None
    assert r["caller"] == "0812*****890" and r["menu_keys"] == ["1", "1"]
    assert r["membership_latency_ms"] > 0 and r["membership_lookups"] == 1
    assert r["started_at"] <= r["ended_at"]
    assert "enam ratus ribu rupiah" in " ".join(r["transcript"])
    assert "0001******890" in r["transcript"]
    assert CARD not in json.dumps(r) and BORN not in json.dumps(r)


async def test_unknown_number_and_wrong_date_are_indistinguishable_on_the_wire(hotline):
    unknown = await call(hotline, f"1 0001999999999# 1 {BORN} 0")
    wrong = await call(hotline, f"1 {CARD}# 1 01011991 0")

    def after_birth_date(c):
        sounds = c.sounds
        return sounds[sounds.index(f"bpjs/{P.ENTER_BIRTH_DATE}") + 1:]
    assert after_birth_date(unknown) == after_birth_date(wrong)
    assert unknown.variables["IVR_VERIFIED"] == wrong.variables["IVR_VERIFIED"] == "0"


async def test_the_reference_service_answers_by_nik(hotline):
    c = await call(hotline, f"1 3174015708900003 1 {BORN} 4821")
    assert c.variables["IVR_CARD"] == CARD


async def test_caller_hangs_up_during_identification(hotline, settings):
    c = await call(hotline, "1 h")
    assert c.hung_up
    assert c.variables["IVR_OUTCOME"] == "abandoned"
    r = record_of(settings, c.call_id)
    assert r["outcome"] == "abandoned" and r["ended_at"]
    assert r["transcript"][-1] == load_catalog().text(P.ENTER_ID)


async def test_missing_prompt_files_do_not_break_a_call(hotline, settings):
    c = await call(hotline, f"1 {CARD}# 1 {BORN}",
                   missing=lambda sound: sound in (f"bpjs/{P.GREETING}", f"bpjs/{P.ENTER_ID}"))
    assert c.variables["IVR_OUTCOME"] == "completed"
    assert "CHANNEL STATUS" in c.commands
    # Read skips a missing sound without a word (the greeting); GET DATA answers -1 (the
    # question for the card number), which CHANNEL STATUS tells from a hang-up
    assert record_of(settings, c.call_id)["missing_prompts"] == [f"bpjs/{P.ENTER_ID}"]


async def test_type_ahead_over_the_wire(hotline):
    c = await call(hotline, f"1 {CARD}# 1 {BORN}", barge_in=True)
    assert c.variables["IVR_OUTCOME"] == "completed"
    assert f"bpjs/{P.MAIN_MENU}" not in c.sounds


async def test_language_is_set_when_the_dialplan_did_not(hotline):
    c = await call(hotline, "0", language="en")
    assert 'SET VARIABLE CHANNEL(language) id' in c.commands
