"""Waiting for an agent without Asterisk: staffed hours and the Indonesian calendar, the
expected wait, callback numbers, and the queue-wait dialog on a scripted fake call (bad
input, silence and hang-up at every step)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest

from ivr.call import CallerHungUp
from ivr.dialog import Dialog
from ivr.emulator import ScriptedCaller
from ivr.waiting.dialog import WaitContext, WaitingDialog, WaitSettings
from ivr.waiting.estimate import QueueStats, expected_wait, minutes
from ivr.waiting.hours import StaffedHours, indonesian_holiday, parse_hours
from ivr.waiting.numbers import callback_number
from ivr.waiting.order import queue_priority
from prompts import load_catalog

from .fakes import FakeCall

CATALOG = load_catalog()
WIB = ZoneInfo("Asia/Jakarta")
OFFICE = "mon-sat 08:00-20:00"


def wib(*args) -> datetime:
    return datetime(*args, tzinfo=WIB)


# -- staffed hours

def test_always_staffed_by_default_even_on_independence_day():
    hours = StaffedHours()
    assert hours.is_open(wib(2026, 8, 17, 3, 0)) and hours.always


def test_office_hours_in_wib_whatever_the_server_clock():
    hours = StaffedHours(OFFICE)
    assert hours.is_open(wib(2026, 12, 2, 8, 0))                       # Wednesday 08:00
    assert not hours.is_open(wib(2026, 12, 2, 20, 0))
    assert not hours.is_open(datetime(2026, 12, 2, 0, 30, tzinfo=timezone.utc))  # 07:30 WIB
    assert hours.is_open(datetime(2026, 12, 2, 1, 0, tzinfo=timezone.utc))       # 08:00 WIB
    assert hours.next_open(wib(2026, 12, 5, 21, 0)) == wib(2026, 12, 7, 8, 0)   # Sat -> Mon


def test_public_holidays_and_cuti_bersama_are_closed_and_extra_dates_apply():
    year = 2026
    calendar = holidays.country_holidays("ID", years=year,
                                         categories=(holidays.PUBLIC, holidays.GOVERNMENT))
    syawal = next(d for d, name in calendar.items() if name == "Eid al-Fitr")
    joint = [d for d, name in calendar.items() if "Joint" in name]
    hours = StaffedHours(OFFICE)
    assert indonesian_holiday(date(year, 8, 17))
    assert not hours.is_open(wib(year, 8, 17, 10, 0))          # a Monday
    assert hours.next_open(wib(year, 8, 17, 10, 0)) == wib(year, 8, 18, 8, 0)
    assert not hours.is_open(datetime.combine(syawal, datetime.min.time().replace(hour=10),
                                              WIB))
    assert joint and all(not hours.is_open(datetime.combine(d, datetime.min.time()
                                                            .replace(hour=10), WIB))
                         for d in joint if d.weekday() < 6)
    extra = StaffedHours(OFFICE, closed=frozenset({date(year, 12, 2)}),
                         opened=frozenset({date(year, 8, 17)}))
    assert not extra.is_open(wib(year, 12, 2, 10, 0))
    assert extra.is_open(wib(year, 8, 17, 10, 0))


def test_bad_hours_are_refused():
    for bad in ("monday 08:00-20:00", "mon 20:00-08:00", "mon-sat 8-20", "xyz 08:00-09:00"):
        with pytest.raises(ValueError):
            parse_hours(bad)
    assert parse_hours("mon-fri 08:00-12:00; mon-fri 13:00-17:00")[0][1][0].hour == 13


# -- the estimate, numbers, order

def test_the_estimate_is_position_times_handle_time_over_agents():
    recent = QueueStats(answered=5, mean_talk_s=120.0, mean_wait_s=50.0)
    assert expected_wait(3, 2, recent, 240) == pytest.approx(180)
    assert expected_wait(3, 2, QueueStats(answered=2, mean_talk_s=10.0), 240) == 360
    assert expected_wait(1, 0, recent, 240) is None                  # nobody taking calls
    assert minutes(1) == 1 and minutes(61) == 2 and minutes(120) == 2


@pytest.mark.parametrize("raw, number", [
    ("081234567890", "081234567890"), ("+6281234567890", "081234567890"),
    ("6281234567890", "081234567890"), ("08123456789012", "08123456789012"),
    ("0812345678", None), ("081234567890123", None), ("0212345678901", None),
    ("+12025550123", None), ("08123*567890", None), ("0812345678#0", None), ("", None),
    ("٠٨١٢٣٤٥٦٧٨٩٠", None), (None, None), ("unknown", None)])
def test_callback_numbers(raw, number):
    assert callback_number(raw) == number


def test_an_earlier_join_is_a_higher_priority():
    t = datetime(2026, 12, 2, tzinfo=timezone.utc).timestamp()
    assert queue_priority(t) > queue_priority(t + 0.1) > queue_priority(t + 3600)
    assert queue_priority(datetime(2039, 1, 1, tzinfo=timezone.utc).timestamp()) > -2**31


# -- the dialog

class FakeCallbacks:
    def __init__(self, stats=None, fail=False) -> None:
        self.created: list[dict] = []
        self.stats = stats or {"answered": 0, "mean_talk_s": None, "mean_wait_s": None}
        self.fail = fail

    async def callback_create(self, callback):
        self.created.append(callback)

    async def queue_stats(self, since):
        if self.fail:
            raise OSError("down")
        return self.stats


NOW = wib(2026, 12, 2, 10, 0)       # a Wednesday, staffed in OFFICE hours


async def wait_dialog(keys: str, ctx: WaitContext, *, hours=None, now=NOW, stats=None,
                      **settings):
    call = FakeCall(ScriptedCaller(keys))
    dialog = Dialog(call, CATALOG, menu_timeout=5, first_digit_timeout=6,
                    inter_digit_timeout=3)
    callbacks = FakeCallbacks(stats)
    waiting = WaitingDialog(dialog, callbacks, hours or StaffedHours(),
                            WaitSettings(**settings), lambda: now)
    try:
        result = await waiting.run(ctx)
    except CallerHungUp:
        result = None
    return result, dialog, callbacks


def ctx(position=2, logged=1, paused=0, waited=0.0, caller="081234567890", phase="again"):
    return WaitContext(phase, position, logged, paused, NOW.timestamp() - waited, "call-1",
                       caller)


async def test_position_and_estimate_in_indonesian():
    result, dialog, _ = await wait_dialog("", ctx(position=3, logged=2),
                                          stats={"answered": 4, "mean_talk_s": 80.0,
                                                 "mean_wait_s": 60.0})
    text = " ".join(dialog.transcript)
    assert "Bapak/Ibu berada di antrean ke tiga Perkiraan" in text
    assert "Perkiraan waktu tunggu sekitar dua menit." in text        # 3 * 80 / 2 = 120 s
    assert result.action == "hold" and "Tekan 1" not in text   # no offer yet; near the head


async def test_next_in_line_and_no_figure_without_agents():
    _, dialog, _ = await wait_dialog("", ctx(position=1, logged=0))
    assert dialog.transcript[0] == CATALOG.text("wait-next")
    assert dialog.transcript[1] == CATALOG.text("wait-no-estimate")
    _, dialog, _ = await wait_dialog("", ctx(position=1, logged=2, paused=2))
    assert dialog.transcript[1] == CATALOG.text("wait-no-estimate")


async def test_callback_with_the_caller_id_read_back_and_confirmed():
    result, dialog, callbacks = await wait_dialog("1 1", ctx(waited=61))
    assert result.action == "callback" and result.callback_id
    (made,) = callbacks.created
    assert made["number"] == "081234567890" and made["number_masked"] == "0812*****890"
    assert made["joined_at"] == (NOW - timedelta(seconds=61)).isoformat()
    text = " ".join(dialog.transcript)
    assert "0812*****890" in text and "081234567890" not in text
    assert dialog.transcript[-1] == CATALOG.text("callback-goodbye")


async def test_the_offer_comes_at_once_when_the_wait_is_long():
    result, dialog, _ = await wait_dialog("", ctx(position=5, logged=1))    # 1200 s
    assert CATALOG.text("callback-offer") in dialog.transcript and result.action == "stay"


async def test_another_number_keyed_in_after_2():
    result, _, callbacks = await wait_dialog("1 2 087711223344# 1", ctx(waited=70))
    assert result.action == "callback" and callbacks.created[0]["number"] == "087711223344"


@pytest.mark.parametrize("keys", [
    "1 123# 0212345678901# 08123*#",        # too short, a landline, * then # : 3 invalid
    "1 _ _ _",                              # silence at the number question
    "1 1234 +62 #",                         # odd keys
])
async def test_invalid_numbers_or_silence_go_back_to_the_queue(keys):
    result, dialog, callbacks = await wait_dialog(keys, ctx(position=4, waited=70,
                                                            caller="unknown"))
    assert result.action == "stay" and callbacks.created == []
    assert dialog.transcript[-1] == CATALOG.text("callback-back-to-queue")


async def test_silence_at_the_offer_and_at_the_confirmation_creates_nothing():
    result, _, callbacks = await wait_dialog("_", ctx(waited=70))
    assert result.action == "hold" and callbacks.created == []      # position 2: holds
    result, _, callbacks = await wait_dialog("1 _ _", ctx(position=4, waited=70))
    assert result.action == "stay" and callbacks.created == []


@pytest.mark.parametrize("keys", ["h", "1 h", "1 2 h", "1 2 0877 h", "1 2 087711223344# h"])
async def test_a_hang_up_at_any_step_before_confirming_creates_no_callback(keys):
    result, _, callbacks = await wait_dialog(keys, ctx(waited=70, caller="081234567890"))
    assert result is None and callbacks.created == []


async def test_closed_hours_offer_only_the_callback_for_the_next_period():
    saturday_night = wib(2026, 12, 5, 21, 0)
    result, dialog, callbacks = await wait_dialog(
        "1 1", ctx(phase="enter"), hours=StaffedHours(OFFICE), now=saturday_night)
    assert result.closed and result.action == "callback"
    assert callbacks.created[0]["due_at"] == wib(2026, 12, 7, 8, 0).isoformat()
    text = " ".join(dialog.transcript)
    assert text.startswith(CATALOG.text("closed-now"))
    assert text.endswith("pada tujuh Desember dua ribu dua puluh enam pukul delapan "
                         + CATALOG.text("callback-goodbye"))
    assert "antrean ke" not in text
    result, dialog, callbacks = await wait_dialog("2", ctx(phase="enter"),
                                                  hours=StaffedHours(OFFICE),
                                                  now=saturday_night)
    assert result.action == "hangup" and callbacks.created == []
    # no valid number: goodbye, never "back to the queue" (there is none while closed)
    result, dialog, callbacks = await wait_dialog("1 _ _", ctx(phase="enter"),
                                                  hours=StaffedHours(OFFICE),
                                                  now=saturday_night)
    assert result.action == "hangup" and callbacks.created == []
    assert CATALOG.text("callback-back-to-queue") not in dialog.transcript
    assert dialog.transcript[-1] == CATALOG.text("callback-goodbye")


async def test_a_store_that_is_down_still_gives_a_figure():
    call = FakeCall(ScriptedCaller(""))
    dialog = Dialog(call, CATALOG, menu_timeout=5, first_digit_timeout=6, inter_digit_timeout=3)
    waiting = WaitingDialog(dialog, FakeCallbacks(fail=True), StaffedHours(),
                            WaitSettings(handle_s=60), lambda: NOW)
    result = await waiting.run(ctx(position=2, logged=1))
    assert result.estimate_s == 120


async def test_a_caller_an_agent_is_free_for_hears_nothing_on_entry():
    free = WaitContext("enter", 1, 1, 0, NOW.timestamp(), "call-1", "081234567890", free=1)
    result, dialog, _ = await wait_dialog("", free)
    assert result.action == "stay" and dialog.transcript == []    # announced if not answered
    behind = WaitContext("enter", 2, 1, 0, NOW.timestamp(), "call-1", "081234567890", free=1)
    _, dialog, _ = await wait_dialog("", behind)
    assert dialog.transcript[0] == CATALOG.text("wait-position")


def test_a_simulated_day_keeps_callbacks_in_place_and_the_head_in_the_queue():
    from bench.waiting import simulate
    kept = simulate(stay_at=3)
    assert kept["answered"] == kept["callers"] > 1000
    assert kept["callbacks_overtaken"] == 0 and kept["callers_overtaken"] == 0
    assert simulate(stay_at=0)["callers_overtaken"] > 0     # what staying at the head avoids


def test_the_waiting_prompts_are_the_catalogs_waiting_section():
    import tomllib
    from importlib import resources

    from ivr.waiting.dialog import PROMPTS
    section = tomllib.loads(resources.files("prompts").joinpath("catalog.toml").read_text())
    assert set(section["waiting"]["prompts"]) == PROMPTS
    assert set(section["waiting"]["fragments"]) <= set(CATALOG.fragments)
