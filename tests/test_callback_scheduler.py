"""The callback scheduler over a real SQLite store and a recording AMI: placing a due
callback in its caller's place, and what each attempt's result does."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from ivr.store.sqlite import SqliteStore
from ivr.waiting.hours import StaffedHours
from ivr.waiting.order import queue_priority
from ivr.waiting.scheduler import CallbackScheduler

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)
JOINED = NOW - timedelta(minutes=7)
CB = "0123456789abcdef0123456789abcdef"


class RecordingAmi:
    state = "up"

    def __init__(self, channels: list[str] | None = None) -> None:
        self.actions: list[dict] = []
        self.channels = channels or []      # the IVR_CALLBACK_ID of each live channel

    async def action(self, action: dict) -> dict:
        self.actions.append(action)
        return {"Response": "Success"}

    async def action_list(self, action: dict) -> list[dict]:
        """Status as Asterisk 22 answers it with Variables: one Status event per channel."""
        self.actions.append(action)
        assert action == {"Action": "Status", "Variables": "IVR_CALLBACK_ID"}
        return [{"Response": "Success", "EventList": "start"},
                *({"Event": "Status", "Channel": f"Local/queue@waiting-callback-{i:08x};2",
                   "Variable": f"IVR_CALLBACK_ID={value}"}
                  for i, value in enumerate(self.channels)),
                {"Event": "Status", "Channel": "PJSIP/agent1-00000001", "Variable":
                 "IVR_CALLBACK_ID="},
                {"Event": "StatusComplete", "EventList": "Complete"}]


@pytest.fixture
async def store(tmp_path):
    s = SqliteStore(str(tmp_path / "store.sqlite3"))
    await s.open()
    await s.callback_create({"id": CB, "call_id": "call-7", "number": "081234567801",
                             "number_masked": "0812*****801", "joined_at": JOINED.isoformat(),
                             "due_at": NOW.isoformat(), "status": "scheduled"})
    yield s
    await s.close()


async def test_a_due_callback_enters_the_queue_with_its_callers_first_join(store, caplog):
    ami = RecordingAmi()
    scheduler = CallbackScheduler(store, ami, clock=lambda: NOW)
    with caplog.at_level(logging.INFO):
        (due,) = await store.callbacks_due(NOW.isoformat())
        await scheduler.place(due)
    (originate,) = ami.actions
    assert originate["Channel"] == "Local/queue@waiting-callback/n"
    variables = dict(v.split("=", 1) for v in originate["Variable"])
    assert variables["IVR_QUEUE_PRIO"] == str(queue_priority(JOINED.timestamp()))
    assert variables["__IVR_CALL_ID"] == "call-7" and variables["__IVR_CALLBACK_ID"] == CB
    assert variables["IVR_CALLBACK_NUMBER"] == "081234567801"
    assert (await store.get_callback(CB))["status"] == "queued"
    assert "081234567801" not in caplog.text and "0812*****801" in caplog.text


async def test_busy_is_retried_later_then_fails_and_answer_completes(store):
    scheduler = CallbackScheduler(store, RecordingAmi(), attempts=2, retry_seconds=300,
                                  clock=lambda: NOW)
    await store.callback_set(CB, "queued")
    assert await scheduler.result(CB, "BUSY") == "scheduled"
    again = await store.get_callback(CB)
    assert datetime.fromisoformat(again["due_at"]) == NOW + timedelta(minutes=5)
    assert await scheduler.result(CB, "BUSY") is None          # not queued: ignored
    await store.callback_set(CB, "queued")
    assert await scheduler.result(CB, "NOANSWER") == "failed"
    done = await store.get_callback(CB)
    assert [a["result"] for a in done["attempts"]] == ["busy", "noanswer"]
    await store.callback_set(CB, "queued")
    assert await scheduler.result(CB, "ANSWER") == "completed"


def test_only_well_formed_results_are_taken():
    scheduler = CallbackScheduler(None, RecordingAmi())
    for event in ({"Event": "UserEvent", "UserEvent": "IvrCallback", "CallbackId": "x' OR 1",
                   "DialStatus": "ANSWER"},
                  {"Event": "UserEvent", "UserEvent": "IvrCallback", "CallbackId": CB,
                   "DialStatus": "answer; drop"},
                  {"Event": "UserEvent", "UserEvent": "Other", "CallbackId": CB,
                   "DialStatus": "ANSWER"}):
        scheduler.on_event(event)
    assert len(scheduler._background) == 0


async def settled(scheduler: CallbackScheduler) -> None:
    for _ in range(500):
        if not len(scheduler._background):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the scheduler's background work did not end")


def later(seconds: float):
    """A clock ``seconds`` ahead of the store's (which stamps updated_at with real time)."""
    return lambda: datetime.now(timezone.utc) + timedelta(seconds=seconds)


async def test_a_placeholder_asterisk_no_longer_has_is_placed_again_in_its_place(store, caplog):
    await store.callback_set(CB, "queued")
    # still on Asterisk's channels: left alone
    ami = RecordingAmi(channels=[CB])
    assert await CallbackScheduler(store, ami, watch_seconds=60, clock=later(61)).watch() == []
    assert (await store.get_callback(CB))["status"] == "queued"
    # queued for less than watch_seconds: Asterisk is not even asked (an Originate takes time)
    ami = RecordingAmi()
    assert await CallbackScheduler(store, ami, watch_seconds=60, clock=later(30)).watch() == []
    assert ami.actions == []
    # gone (the queue's timeout, an Asterisk restart): scheduled at once, no attempt counted
    scheduler = CallbackScheduler(store, RecordingAmi(channels=["f" * 32]), watch_seconds=60,
                                  clock=later(61))
    with caplog.at_level(logging.WARNING):
        assert await scheduler.watch() == [CB]
    again = await store.get_callback(CB)
    assert again["status"] == "scheduled" and again["attempts"] == []
    assert again["joined_at"] == JOINED.isoformat(timespec="milliseconds")   # its place kept
    assert datetime.fromisoformat(again["due_at"]) <= datetime.now(timezone.utc) + timedelta(
        seconds=62)
    assert "placed again" in caplog.text


async def test_a_result_on_its_way_is_not_taken_for_a_lost_placeholder(store):
    await store.callback_set(CB, "queued")
    scheduler = CallbackScheduler(store, RecordingAmi(), watch_seconds=60, clock=later(61))
    scheduler.on_event({"Event": "UserEvent", "UserEvent": "IvrCallback", "CallbackId": CB,
                        "DialStatus": "ANSWER"})      # received, not yet recorded
    assert await scheduler.watch() == []
    await settled(scheduler)
    done = await store.get_callback(CB)
    assert done["status"] == "completed" and [a["result"] for a in done["attempts"]] == ["answer"]


async def test_the_board_shows_each_callback_and_its_attempts_without_the_number(store):
    shown: list[list[dict]] = []
    scheduler = CallbackScheduler(store, RecordingAmi(), attempts=3, clock=lambda: NOW,
                                  on_board=shown.append)
    await scheduler.refresh_board()
    await scheduler.refresh_board()                 # unchanged: not pushed again
    assert len(shown) == 1 and [c["status"] for c in shown[0]] == ["scheduled"]
    await store.callback_set(CB, "queued")
    scheduler.on_event({"Event": "UserEvent", "UserEvent": "IvrCallback", "CallbackId": CB,
                        "DialStatus": "BUSY"})
    await settled(scheduler)                         # the result recorded, the board read
    (entry,) = shown[-1]
    assert entry["status"] == "scheduled" and entry["number_masked"] == "0812*****801"
    assert [(a["n"], a["result"]) for a in entry["attempts"]] == [(1, "busy")]
    assert "081234567801" not in repr(shown)


class SilentStatusAmi(RecordingAmi):
    """Asterisk too slow to list its channels: the Status action times out."""

    async def action_list(self, action: dict) -> list[dict]:
        raise TimeoutError("no answer to Status in time")


async def test_a_watchdog_that_cannot_ask_asterisk_never_holds_up_due_callbacks(store, caplog):
    other = "f" * 32
    await store.callback_create({"id": other, "call_id": "call-8", "number": "081234567808",
                                 "number_masked": "0812*****808",
                                 "joined_at": JOINED.isoformat(), "due_at": NOW.isoformat(),
                                 "status": "queued"})          # long queued: to be looked for
    ami = SilentStatusAmi()
    scheduler = CallbackScheduler(store, ami, watch_seconds=60, poll=0.01, clock=later(61))
    with caplog.at_level(logging.WARNING):
        await scheduler.start()
        try:
            for _ in range(300):
                if any(a.get("Action") == "Originate" for a in ami.actions):
                    break
                await asyncio.sleep(0.01)
        finally:
            await scheduler.stop()
    (originate,) = [a for a in ami.actions if a.get("Action") == "Originate"]
    assert f"__IVR_CALLBACK_ID={CB}" in originate["Variable"]
    assert "lost placeholders not looked for" in caplog.text
    assert (await store.get_callback(other))["status"] == "queued"     # left as it was


async def test_two_desks_sharing_the_store_place_a_callback_once(store):
    one, two = RecordingAmi(), RecordingAmi()
    (due,) = await store.callbacks_due(NOW.isoformat())
    await asyncio.gather(CallbackScheduler(store, one, clock=lambda: NOW).place(dict(due)),
                         CallbackScheduler(store, two, clock=lambda: NOW).place(dict(due)))
    assert len(one.actions) + len(two.actions) == 1
    assert (await store.get_callback(CB))["status"] == "queued"


async def test_a_retry_or_a_lost_placeholder_waits_for_the_next_staffed_period(store):
    friday_night = datetime(2026, 12, 4, 19, 58, tzinfo=ZoneInfo("Asia/Jakarta"))
    hours = StaffedHours("mon-fri 08:00-20:00")
    monday_8 = datetime(2026, 12, 7, 8, 0, tzinfo=ZoneInfo("Asia/Jakarta"))
    scheduler = CallbackScheduler(store, RecordingAmi(), retry_seconds=300, hours=hours,
                                  clock=lambda: friday_night)
    await store.callback_set(CB, "queued")
    assert await scheduler.result(CB, "NOANSWER") == "scheduled"
    assert datetime.fromisoformat((await store.get_callback(CB))["due_at"]) == monday_8
    # in staffed hours: 5 minutes later, as configured
    scheduler.clock = lambda: monday_8
    await store.callback_set(CB, "queued")
    assert await scheduler.result(CB, "BUSY") == "scheduled"
    assert datetime.fromisoformat((await store.get_callback(CB))["due_at"]) == (
        monday_8 + timedelta(minutes=5))
    # a lost placeholder at night: placed again when the agents are back
    await store.callback_set(CB, "queued")
    night = CallbackScheduler(store, RecordingAmi(), watch_seconds=0, hours=hours,
                              clock=lambda: datetime.now(timezone.utc).replace(
                                  year=2026, month=12, day=5, hour=15))     # Sat 22:00 WIB
    await asyncio.sleep(0.01)
    assert await night.watch() == [CB]
    assert datetime.fromisoformat((await store.get_callback(CB))["due_at"]) == monday_8
