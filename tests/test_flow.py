"""The call flow of ../shared/spec/hotline.md, branch by branch, on a scripted fake call."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import pytest

from ivr.call import CallerHungUp
from ivr.dialog import Dialog
from ivr.emulator import ScriptedCaller
from ivr.hotline import CallState, FlowSettings, Hotline
from ivr.membership import Billing
from ivr.names import Outcome, P, Reason
from prompts import load_catalog

from .fakes import SITI, FakeCall, FakeMembership, participant

CATALOG = load_catalog()
CARD, NIK, BORN = "0001234567890", "3174015708900003", "17081990"
TODAY = date(2026, 11, 23)
STATUS = f"1 {CARD}# 1 {BORN}"


@dataclass
class Result:
    state: CallState
    call: FakeCall
    dialog: Dialog
    membership: FakeMembership

    @property
    def prompts(self) -> list[str]:
        """Prompt ids played, fragments left out."""
        ids = [CATALOG.prompt_id(s) for s in self.call.sounds]
        return [i for i in ids if i in CATALOG.prompts]

    @property
    def text(self) -> str:
        return " ".join(self.dialog.transcript)

    def count(self, prompt_id: str) -> int:
        return self.prompts.count(prompt_id)


@pytest.fixture
def run(lockout):
    async def run(keys: str, *participants, barge_in=False, membership=None,
                  caller="081234567890", caller_cls=ScriptedCaller, **flow) -> Result:
        call = FakeCall(caller_cls(keys, barge_in=barge_in))
        dialog = Dialog(call, CATALOG, menu_timeout=5, first_digit_timeout=6,
                        inter_digit_timeout=3)
        membership = membership or FakeMembership(*(participants or (SITI,)))
        settings = FlowSettings(**{"hold_prompt_after": 1.0, "lookup_timeout": 3.0, **flow})
        hotline = Hotline(dialog, membership, lockout, call_id="1795409641.1", caller=caller,
                          settings=settings, today=lambda: TODAY)
        state = await hotline.run()
        return Result(state, call, dialog, membership)
    return run


# -- the main path

async def test_active_self_payer_hears_status_and_billing_then_goodbye(run):
    r = await run(STATUS)
    assert r.state.outcome is Outcome.COMPLETED and r.state.transfer_reason is None
    assert r.state.verified_card == CARD and r.state.member_status == "AKTIF"
    assert r.prompts[:3] == [P.GREETING, P.MAIN_MENU, P.ENTER_ID]
    assert r.prompts[-2:] == [P.POST_MENU, P.GOODBYE]
    assert ("Status kepesertaan Bapak/Ibu aktif. Bapak/Ibu terdaftar sebagai peserta pekerja "
            "mandiri, kelas dua. Iuran yang harus dibayar sebesar enam ratus ribu rupiah untuk "
            "dua bulan dan tiga anggota keluarga, dengan batas pembayaran tanggal sepuluh "
            "Desember dua ribu dua puluh enam") in r.text
    assert r.dialog.menu_keys == ["1", "1"]
    assert r.membership.requests == [(CARD, "1795409641.1")]
    assert P.PLEASE_WAIT not in r.prompts


async def test_card_number_is_read_back_digit_by_digit_and_masked_in_the_transcript(run):
    r = await run(STATUS)
    digits = [CATALOG.prompt_id(s) for s in r.call.sounds]
    start = digits.index(P.READBACK_CARD) + 1
    assert digits[start:start + 13] == [f"num-{d}" for d in CARD]
    assert "0001******890" in r.dialog.transcript
    assert CARD not in r.text and "nol nol nol satu dua" not in r.text


async def test_nik_is_complete_at_the_sixteenth_digit(run):
    r = await run(f"1 {NIK} 1 {BORN} 4821")
    assert r.state.outcome is Outcome.COMPLETED and r.state.verified_card == CARD
    assert P.READBACK_NIK in r.prompts and r.membership.requests[0][0] == NIK


@pytest.mark.parametrize("barge_in", [False, True])
async def test_a_hash_after_a_complete_nik_is_not_a_stray_key(run, barge_in):
    # the caller presses # out of habit after the 16th digit: while the read-back starts
    # (barge_in), or when the IVR next listens
    r = await run(f"1 {NIK}# 1 {BORN} 4821", barge_in=barge_in)
    assert r.state.outcome is Outcome.COMPLETED and r.state.verified_card == CARD
    assert r.dialog.menu_keys == ["1", "1"] and r.count(P.READBACK_NIK) == 1
    if not barge_in:   # (a barging caller's "1" cuts the read-back, by design of the script)
        sounds = [CATALOG.prompt_id(s) for s in r.call.sounds]
        start = sounds.index(P.READBACK_NIK)
        assert sounds[start + 1:start + 18] == [f"num-{d}" for d in NIK] + [P.CONFIRM_ID]
        assert r.count(P.CONFIRM_ID) == 1


async def test_a_hash_after_a_complete_birth_date_is_dropped_too(run):
    r = await run(f"1 {CARD}# 1 {BORN}#", barge_in=True)
    assert r.state.outcome is Outcome.COMPLETED and P.STATUS_ACTIVE in r.prompts
    assert P.CHOICE_UNAVAILABLE not in r.prompts


async def test_star_inside_one_entry_collected_at_once_starts_it_over(run):
    # Asterisk's GET DATA counts * as a key: 16 keys arrive with the card not yet whole
    r = await run(f"1 000*{CARD}# 1 {BORN}", barge_in=True)
    assert r.state.verified_card == CARD and P.ID_INVALID not in r.prompts


async def test_a_key_pressed_while_the_look_up_runs_is_kept(run):
    membership = FakeMembership(SITI, delay=0.3)

    class PressesZeroDuringTheLookUp(ScriptedCaller):
        pressed = False

        def on_wait(self):
            if membership.requests and not self.pressed:
                self.pressed = True
                return "0"
            return super().on_wait()

    r = await run(STATUS, membership=membership, caller_cls=PressesZeroDuringTheLookUp)
    # "0" answered the post-menu before its status began: the caller asked for an agent
    assert (r.state.outcome, r.state.transfer_reason) == (Outcome.TRANSFER, Reason.CALLER_REQUEST)
    assert r.state.verified_card == CARD and r.dialog.menu_keys == ["1", "1", "0"]
    assert P.STATUS_ACTIVE not in r.prompts and r.state.time_to_status_ms is None


async def test_card_number_then_a_pause_is_a_card_number(run):
    r = await run(f"1 {CARD} 1 {BORN}")
    assert r.state.verified_card == CARD and P.READBACK_CARD in r.prompts


async def test_star_starts_the_entry_over(run):
    r = await run(f"1 123*{CARD}# 1 {BORN}")
    assert r.state.verified_card == CARD and P.ID_INVALID not in r.prompts


async def test_announcement_plays_after_the_greeting(run):
    r = await run("0", announcement="announcement-maintenance")
    assert r.prompts[:3] == [P.GREETING, "announcement-maintenance", P.MAIN_MENU]


# -- type-ahead

async def test_type_ahead_reaches_status_without_waiting_for_any_prompt(run):
    r = await run(STATUS, barge_in=True)
    assert r.state.outcome is Outcome.COMPLETED and r.state.verified_card == CARD
    # the greeting was cut by "1", so the main menu was never played
    assert P.MAIN_MENU not in r.prompts
    assert r.prompts[:2] == [P.GREETING, P.ENTER_ID]
    first_status = r.prompts.index(P.STATUS_ACTIVE)
    assert P.GREETING in r.prompts[:first_status]


async def test_key_pressed_during_a_prompt_is_the_first_key_of_the_answer(run):
    # the whole card number is typed while "enter your number" plays
    r = await run(f"1 {CARD}# 1 {BORN}", barge_in=True)
    assert r.membership.requests[0][0] == CARD


# -- main menu

async def test_zero_transfers_at_the_callers_request(run):
    r = await run("0")
    assert (r.state.outcome, r.state.transfer_reason) == (Outcome.TRANSFER, Reason.CALLER_REQUEST)
    assert r.prompts[-1] == P.TRANSFER_AGENT and r.state.verified_card == ""


async def test_two_explains_how_to_pay_then_returns_to_the_menu(run):
    r = await run("2 0")
    assert r.prompts == [P.GREETING, P.MAIN_MENU, P.HOW_TO_PAY, P.MAIN_MENU, P.TRANSFER_AGENT]
    assert P.VA_NUMBER not in r.prompts


async def test_nine_repeats_the_menu(run):
    r = await run("9 0")
    assert r.count(P.MAIN_MENU) == 2 and r.state.transfer_reason is Reason.CALLER_REQUEST


async def test_three_silent_rounds_say_goodbye_with_no_input(run):
    r = await run("")
    assert r.state.outcome is Outcome.NO_INPUT
    assert r.count(P.MAIN_MENU) == 3 and r.prompts[-1] == P.GOODBYE


async def test_silent_rounds_must_be_in_a_row(run):
    r = await run("_ _ 7 _ _ 0")
    assert r.state.transfer_reason is Reason.CALLER_REQUEST


async def test_three_unavailable_choices_transfer_with_invalid_input(run):
    r = await run("5 6 7")
    assert (r.state.outcome, r.state.transfer_reason) == (Outcome.TRANSFER, Reason.INVALID_INPUT)
    assert r.count(P.CHOICE_UNAVAILABLE) == 2


# -- identification

async def test_wrong_length_is_not_valid_and_asked_again(run):
    r = await run(f"1 12345# {CARD}# 1 {BORN}")
    assert r.count(P.ID_INVALID) == 1 and r.state.verified_card == CARD


async def test_no_digits_is_not_valid(run):
    r = await run(f"1 # {CARD}# 1 {BORN}")
    assert r.count(P.ID_INVALID) == 1 and r.state.verified_card == CARD


async def test_nik_whose_date_part_cannot_be_a_date_is_not_valid(run):
    r = await run(f"1 3174019913900003 {CARD}# 1 {BORN}")
    assert r.count(P.ID_INVALID) == 1
    assert [q[0] for q in r.membership.requests] == [CARD]


async def test_three_invalid_entries_transfer_with_invalid_input(run):
    r = await run("1 1# 22# 333#")
    assert (r.state.outcome, r.state.transfer_reason) == (Outcome.TRANSFER, Reason.INVALID_INPUT)
    assert r.count(P.ID_INVALID) == 3 and r.membership.requests == []


async def test_invalid_birth_dates_count_with_invalid_identifiers(run):
    # one bad number, then a future date and a date that does not exist
    r = await run(f"1 12# {CARD}# 1 01012099 31022000")
    assert r.state.transfer_reason is Reason.INVALID_INPUT
    assert r.count(P.ID_INVALID) == 1 and r.count(P.BIRTH_DATE_INVALID) == 2


@pytest.mark.parametrize("born", ["31121899", "00011990", "17131990", "2902199"])
async def test_impossible_birth_dates_are_not_valid(run, born):
    r = await run(f"1 {CARD}# 1 {born} {BORN}")
    assert r.count(P.BIRTH_DATE_INVALID) == 1 and r.state.verified_card == CARD


async def test_two_at_the_read_back_re_enters_the_number(run):
    r = await run(f"1 0001234567891# 2 {CARD}# 1 {BORN}")
    assert r.count(P.ENTER_ID) == 2 and r.membership.requests[0][0] == CARD


async def test_read_back_without_an_answer_three_times_transfers(run):
    r = await run(f"1 {CARD}# _ 5 _")
    assert (r.state.outcome, r.state.transfer_reason) == (Outcome.TRANSFER, Reason.INVALID_INPUT)
    assert r.count(P.CONFIRM_ID) == 3 and P.ENTER_BIRTH_DATE not in r.prompts


# -- verification

async def test_wrong_birth_date_and_unknown_number_get_one_and_the_same_message(run):
    wrong_date = await run(f"1 {CARD}# 1 18081990 0")
    unknown = await run(f"1 0001999999999# 1 {BORN} 0")
    for r in (wrong_date, unknown):
        assert r.prompts[r.prompts.index(P.PLEASE_WAIT) + 1 if P.PLEASE_WAIT in r.prompts
                         else r.prompts.index(P.ENTER_BIRTH_DATE) + 1] == P.DATA_MISMATCH
        assert r.state.verified_card == ""
    tail = lambda r: r.prompts[r.prompts.index(P.DATA_MISMATCH):]  # noqa: E731
    assert tail(wrong_date) == tail(unknown)


async def test_three_failed_verifications_transfer(run, lockout):
    wrong = f"{CARD}# 1 01011980"
    r = await run(f"1 {wrong} {wrong} {wrong}")
    assert (r.state.outcome, r.state.transfer_reason) == (
        Outcome.TRANSFER, Reason.VERIFICATION_FAILED)
    assert r.count(P.DATA_MISMATCH) == 3 and len(r.membership.requests) == 3
    # what an agent is shown of an unverified caller: the identifier typed, masked
    assert r.state.identifier_masked == "0001******890"


async def test_participant_pseudonym_is_stable_and_reveals_no_digits(lockout):
    ref = lockout.pseudonym(CARD)
    assert ref == lockout.pseudonym(CARD) != lockout.pseudonym(NIK)
    assert CARD not in ref and len(ref) == 64


async def test_an_identifier_with_five_failures_is_locked_before_the_birth_date(run, lockout):
    for _ in range(5):
        await lockout.record_failure(CARD, "unknown")
    r = await run(f"1 {CARD}# 1 {BORN}", caller="unknown")
    assert (r.state.outcome, r.state.transfer_reason) == (Outcome.TRANSFER, Reason.LOCKED)
    assert P.ENTER_BIRTH_DATE not in r.prompts and r.prompts[-1] == P.LOCKED
    assert r.membership.requests == []


async def test_four_failures_do_not_lock(run, lockout):
    for _ in range(4):
        await lockout.record_failure(CARD, "unknown")
    r = await run(STATUS, caller="unknown")
    assert r.state.verified_card == CARD


async def test_a_caller_number_with_ten_failures_is_locked(run, lockout):
    for i in range(10):
        await lockout.record_failure(f"000100000000{i % 10}", "081298765432")
    r = await run(f"1 {CARD}# 1 {BORN}", caller="081298765432")
    assert r.state.transfer_reason is Reason.LOCKED


async def test_failed_verifications_in_calls_add_up_to_a_lockout(run):
    wrong = f"{CARD}# 1 01011980"
    await run(f"1 {wrong} {wrong} {wrong}", caller="unknown")
    await run(f"1 {wrong} {wrong}", caller="unknown")
    r = await run(STATUS, caller="unknown")
    assert r.state.transfer_reason is Reason.LOCKED


async def test_lockout_store_keeps_no_clear_identifier(lockout):
    await lockout.record_failure(CARD, "081298765432")
    async with lockout._db.execute("SELECT subject FROM failures") as cur:
        subjects = [row[0] async for row in cur]
    assert len(subjects) == 2
    assert all(CARD not in s and "081298765432" not in s and len(s) == 64 for s in subjects)


# -- the membership service

async def test_slow_service_gets_a_please_hold(run):
    r = await run(STATUS, membership=FakeMembership(SITI, delay=0.15), hold_prompt_after=0.05)
    assert r.state.verified_card == CARD
    assert r.prompts[r.prompts.index(P.PLEASE_WAIT) - 1] == P.ENTER_BIRTH_DATE


async def test_service_failure_apologises_and_transfers(run):
    r = await run(STATUS, membership=FakeMembership(SITI, fail=True))
    assert (r.state.outcome, r.state.transfer_reason) == (
        Outcome.TRANSFER, Reason.SERVICE_UNAVAILABLE)
    assert r.prompts[-2:] == [P.SERVICE_UNAVAILABLE, P.TRANSFER_AGENT]
    assert P.DATA_MISMATCH not in r.prompts


async def test_lookup_past_its_time_limit_has_failed(run):
    r = await run(STATUS, membership=FakeMembership(SITI, delay=5), hold_prompt_after=0.05,
                  lookup_timeout=0.2)
    assert r.state.transfer_reason is Reason.SERVICE_UNAVAILABLE
    assert r.state.membership_latency_ms < 1000


# -- status and billing

def bill(payer="PESERTA", members=1, months=3, premium=35000, due=date(2026, 12, 10)):
    return Billing(payer=payer, monthly_premium=premium, family_members=members,
                   months_in_arrears=months, amount_due=premium * members * months,
                   due_date=due)


@pytest.mark.parametrize("reason, prompt_id", [
    ("TUNGGAKAN", P.REASON_ARREARS), ("PENANGGUHAN", P.REASON_SUSPENDED),
    ("NONAKTIF_PBI", P.REASON_PBI_REMOVED), ("DATA_TIDAK_VALID", P.REASON_DATA_INVALID)])
async def test_inactive_reasons_in_plain_words(run, reason, prompt_id):
    r = await run(STATUS, participant(status="TIDAK_AKTIF", inactive_reason=reason))
    status = r.prompts.index(P.STATUS_INACTIVE)
    assert r.prompts[status + 1] == prompt_id
    assert r.state.member_status == "TIDAK_AKTIF" and r.state.outcome is Outcome.COMPLETED


@pytest.mark.parametrize("reason", ["MENINGGAL", "LAINNYA"])
async def test_other_reasons_send_to_an_agent_without_forcing_a_transfer(run, reason):
    r = await run(STATUS, participant(status="TIDAK_AKTIF", inactive_reason=reason))
    status = r.prompts.index(P.STATUS_INACTIVE)
    assert r.prompts[status:] == [P.STATUS_INACTIVE, P.REASON_TALK_TO_AGENT, P.POST_MENU,
                                  P.GOODBYE]
    assert r.state.outcome is Outcome.COMPLETED


async def test_arrears_of_a_class_three_family(run):
    p = participant(status="TIDAK_AKTIF", inactive_reason="TUNGGAKAN", member_class=3,
                    segment="BP", billing=bill(members=4, months=3))
    r = await run(STATUS, p)
    assert ("peserta bukan pekerja, kelas tiga. Iuran yang harus dibayar sebesar empat ratus "
            "dua puluh ribu rupiah untuk tiga bulan dan empat anggota keluarga") in r.text


@pytest.mark.parametrize("billing, prompt_id", [
    (bill(payer="PEMERINTAH"), P.BILL_GOVERNMENT), (bill(payer="PEMBERI_KERJA"),
                                                    P.BILL_EMPLOYER),
    (None, P.BILL_UNAVAILABLE), (bill(months=0), P.BILL_NOTHING_DUE)])
async def test_billing_by_payer(run, billing, prompt_id):
    r = await run(STATUS, participant(billing=billing))
    assert r.prompts[r.prompts.index(P.POST_MENU) - 1] == prompt_id
    assert P.BILL_AMOUNT not in r.prompts


async def test_segment_and_class_for_each_segment(run):
    for segment, prompt_id in [("PBI", P.SEGMENT_PBI), ("PPU", P.SEGMENT_PPU),
                               ("PBPU", P.SEGMENT_PBPU), ("BP", P.SEGMENT_BP)]:
        r = await run(STATUS, participant(segment=segment, member_class=1))
        assert [prompt_id, P.CLASS_1] == r.prompts[r.prompts.index(prompt_id):][:2]


# -- after the status

async def test_post_menu_one_repeats_the_status(run):
    r = await run(f"{STATUS} 1")
    assert r.count(P.STATUS_ACTIVE) == 2 and r.count(P.POST_MENU) == 2


async def test_post_menu_two_reads_the_virtual_account(run):
    r = await run(f"{STATUS} 2")
    va = r.prompts.index(P.VA_NUMBER)
    assert r.prompts[va - 1] == P.HOW_TO_PAY
    sounds = [CATALOG.prompt_id(s) for s in r.call.sounds]
    start = sounds.index(P.VA_NUMBER) + 1
    assert sounds[start:start + 16] == [f"num-{d}" for d in "8888801234567890"]
    assert "8888*********890" in r.dialog.transcript and "8888801234567890" not in r.text
    assert r.state.outcome is Outcome.COMPLETED


async def test_post_menu_zero_transfers_with_the_verified_context(run):
    r = await run(f"{STATUS} 0")
    assert (r.state.outcome, r.state.transfer_reason) == (Outcome.TRANSFER, Reason.CALLER_REQUEST)
    assert r.state.verified_card == CARD


async def test_post_menu_nine_returns_to_the_main_menu(run):
    r = await run(f"{STATUS} 9 0")
    assert r.count(P.MAIN_MENU) == 2 and r.state.transfer_reason is Reason.CALLER_REQUEST


async def test_post_menu_three_wrong_keys_transfer(run):
    r = await run(f"{STATUS} 5 6 7")
    assert r.state.transfer_reason is Reason.INVALID_INPUT and r.count(P.CHOICE_UNAVAILABLE) == 2


# -- hang-ups

async def test_hang_up_mid_prompt_raises_and_keeps_what_was_learned(run):
    with pytest.raises(CallerHungUp):
        await run(f"{STATUS} h")


async def status_timing(lockout, barge_in: bool):
    """A call on a clock where each sound takes 1 s: what the record's two figures say."""
    call = FakeCall(ScriptedCaller(STATUS, barge_in=barge_in))
    dialog = Dialog(call, CATALOG, menu_timeout=5, first_digit_timeout=6, inter_digit_timeout=3,
                    clock=lambda: float(len(call.sounds)))
    dialog.durations = {p: 1000 for p in CATALOG.texts}
    hotline = Hotline(dialog, FakeMembership(SITI), lockout, call_id="x", caller="unknown",
                      settings=FlowSettings(), today=lambda: TODAY)
    state = await hotline.run()
    return state, [CATALOG.prompt_id(s) for s in call.sounds]


async def test_time_to_status_is_the_callers_time_and_audio_the_prompts_started(lockout):
    patient, sounds = await status_timing(lockout, barge_in=False)
    assert patient.time_to_status_ms == 1000 * sounds.index(P.STATUS_ACTIVE)
    assert patient.audio_to_status_ms == patient.time_to_status_ms
    # typing during the prompts cuts them: the caller reaches the status sooner
    eager, sounds = await status_timing(lockout, barge_in=True)
    assert sounds[:4] == [P.GREETING, P.ENTER_ID, P.READBACK_CARD, P.ENTER_BIRTH_DATE]
    assert eager.time_to_status_ms == 4000 < patient.time_to_status_ms
    assert eager.audio_to_status_ms == 4000


def test_every_prompt_the_flow_names_is_in_the_catalog():
    assert {p.value for p in P} <= set(CATALOG.texts)


def test_every_catalog_prompt_has_a_use():
    from ivr.names import ANNOUNCEMENT_PREFIX, DIALPLAN_PROMPTS
    from ivr.waiting.dialog import PROMPTS as WAITING_PROMPTS
    unused = {i for i in CATALOG.prompts
              if i not in {p.value for p in P} | DIALPLAN_PROMPTS | WAITING_PROMPTS
              and not i.startswith(ANNOUNCEMENT_PREFIX)}
    assert unused == set()


def test_participant_fixture_is_the_spec_example():
    assert replace(SITI).billing.amount_due == 600000
