"""The callback scheduler over a real SQLite store and a recording AMI: placing a due
callback in its caller's place, and what each attempt's result does."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from ivr.store.sqlite import SqliteStore
from ivr.waiting.order import queue_priority
from ivr.waiting.scheduler import CallbackScheduler

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)
JOINED = NOW - timedelta(minutes=7)
CB = "0123456789abcdef0123456789abcdef"


class RecordingAmi:
    state = "up"

    def __init__(self) -> None:
        self.actions: list[dict] = []

    async def action(self, action: dict) -> dict:
        self.actions.append(action)
        return {"Response": "Success"}


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
