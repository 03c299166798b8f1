"""Verification that cannot be side-stepped (spec hotline.md v1.3, steps 4 and 5), on a
scripted fake call: the NIK's extra factor, one lockout count per participant, one for
callers without a number."""
from __future__ import annotations

from datetime import date

import pytest

from ivr.dialog import Dialog
from ivr.emulator import ScriptedCaller
from ivr.hotline import FlowSettings, Hotline
from ivr.lockout import LockoutStore
from ivr.names import Outcome, P, Reason
from prompts import load_catalog

from .fakes import SITI, FakeCall, FakeMembership, participant

CATALOG = load_catalog()
CARD, NIK, BORN, PHONE = "0001234567890", "3174015708900003", "17081990", "4821"
WRONG_BORN = "18081990"
TODAY = date(2026, 11, 23)
NO_PHONE = participant(phone_last4=None)


@pytest.fixture
async def lockout():
    store = LockoutStore(":memory:", identifier_limit=5, caller_limit=10, window_hours=24,
                         anonymous_limit=4, anonymous_window_hours=1, salt="test-salt")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def run(lockout):
    async def run(keys: str, *participants, caller="081234567890"):
        call = FakeCall(ScriptedCaller(keys))
        dialog = Dialog(call, CATALOG, menu_timeout=5, first_digit_timeout=6,
                        inter_digit_timeout=3)
        membership = FakeMembership(*(participants or (SITI,)))
        hotline = Hotline(dialog, membership, lockout, call_id="1795409641.1", caller=caller,
                          settings=FlowSettings(), today=lambda: TODAY)
        state = await hotline.run()
        prompts = [i for i in map(CATALOG.prompt_id, call.sounds) if i in CATALOG.prompts]
        return state, prompts, membership, hotline
    return run


# -- step 4: a NIK needs the last 4 digits of the registered mobile number

async def test_nik_with_the_right_phone_digits_is_verified(run):
    state, prompts, membership, _ = await run(f"1 {NIK} 1 {BORN} {PHONE}")
    assert state.outcome is Outcome.COMPLETED and state.verified_card == CARD
    birth, phone = prompts.index(P.ENTER_BIRTH_DATE), prompts.index(P.ENTER_PHONE_LAST4)
    assert birth < phone and len(membership.requests) == 1   # asked before the lookup


async def test_nik_with_a_wrong_phone_is_a_failed_verification(run, lockout):
    state, prompts, _, _ = await run(f"1 {NIK} 1 {BORN} 4822 0")
    assert not state.verified_card
    assert P.DATA_MISMATCH in prompts
    assert await lockout.failures(NIK) == await lockout.failures(CARD) == 1


async def test_a_wrong_phone_and_a_wrong_birth_date_sound_the_same(run):
    _, wrong_phone, _, _ = await run(f"1 {NIK} 1 {BORN} 4822 0")
    _, wrong_born, _, _ = await run(f"1 {NIK} 1 {WRONG_BORN} {PHONE} 0")
    _, unknown, _, _ = await run(f"1 3174015708900099 1 {BORN} {PHONE} 0")
    assert wrong_phone == wrong_born
    assert unknown[-4:] == wrong_born[-4:]
    assert unknown.count(P.ENTER_PHONE_LAST4) == 1    # asked even for a NIK not found


async def test_nik_without_a_registered_phone_asks_for_the_card_number(run, lockout):
    state, prompts, _, hotline = await run(
        f"1 {NIK} 1 {BORN} {PHONE} {CARD}# 1 {BORN}", NO_PHONE)
    assert state.outcome is Outcome.COMPLETED and state.verified_card == CARD
    needs_card = prompts.index(P.NIK_NEEDS_CARD)
    assert prompts[needs_card + 1] == P.ENTER_ID
    assert P.DATA_MISMATCH not in prompts
    assert hotline.invalid_entries == hotline.failed_verifications == 0
    assert await lockout.failures(CARD) == 0
    assert prompts.count(P.ENTER_PHONE_LAST4) == 1     # not for the card number


async def test_a_second_nik_without_a_phone_goes_to_an_agent(run):
    state, prompts, _, _ = await run(
        f"1 {NIK} 1 {BORN} {PHONE} {NIK} 1 {BORN} 1111", NO_PHONE)
    assert (state.outcome, state.transfer_reason) == (Outcome.TRANSFER,
                                                      Reason.VERIFICATION_FAILED)
    assert prompts.count(P.NIK_NEEDS_CARD) == 1 and prompts[-1] == P.TRANSFER_AGENT


async def test_phone_digits_short_of_four_are_an_invalid_entry(run):
    state, prompts, _, hotline = await run(f"1 {NIK} 1 {BORN} 482# {PHONE}")
    assert state.verified_card == CARD
    assert P.PHONE_INVALID in prompts and hotline.invalid_entries == 1


async def test_a_card_number_and_birth_date_stay_enough(run):
    state, prompts, _, _ = await run(f"1 {CARD}# 1 {BORN}")
    assert state.verified_card == CARD and P.ENTER_PHONE_LAST4 not in prompts


# -- step 5: lockout that cannot be side-stepped

async def test_switching_between_card_number_and_nik_gains_nothing(run, lockout):
    three_by_card = f"1 {CARD}# 1 {WRONG_BORN} {CARD}# 1 {WRONG_BORN} {CARD}# 1 {WRONG_BORN}"
    state, _, _, _ = await run(three_by_card, caller="081111111111")
    assert state.transfer_reason is Reason.VERIFICATION_FAILED
    two_by_nik = f"1 {NIK} 1 {WRONG_BORN} {PHONE} {NIK} 1 {BORN} 9999 0"
    await run(two_by_nik, caller="082222222222")
    for identifier in (f"{CARD}#", NIK):      # five failures for Siti, from two callers
        state, prompts, membership, _ = await run(f"1 {identifier} 1 {BORN} {PHONE}",
                                                  caller="083333333333")
        assert (state.outcome, state.transfer_reason) == (Outcome.TRANSFER, Reason.LOCKED)
        assert P.ENTER_BIRTH_DATE not in prompts and membership.requests == []


async def test_callers_without_a_number_share_one_count(run, lockout):
    for i, caller in enumerate(["anonymous", "unknown", "", "Restricted"]):
        await run(f"1 000100000000{i}# 1 {BORN} 0", caller=caller)
    state, prompts, _, _ = await run(f"1 {CARD}# 1 {BORN}", caller="anonymous")
    assert (state.outcome, state.transfer_reason) == (Outcome.TRANSFER, Reason.LOCKED)
    state, _, _, _ = await run(f"1 {CARD}# 1 {BORN}", caller="081234567890")
    assert state.verified_card == CARD       # a caller with a number is not locked by them
