"""The store's contract, the same tests for both engines: SQLite in a file, and a real
PostgreSQL server started for the session (``tests/postgres.py``)."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from ivr.config import Settings
from ivr.store import StoreUnavailable, open_store
from ivr.store.postgres import PostgresStore
from ivr.store.sqlite import SqliteStore

from .conftest import free_port
from .postgres import postgres_server  # noqa: F401  (the session fixture)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "store.sqlite3"))
    else:
        s = PostgresStore(request.getfixturevalue("postgres_server").new_database())
    await s.open()
    yield s
    await s.close()


def ago(**delta) -> str:
    return (datetime.now(timezone.utc) - timedelta(**delta)).isoformat(timespec="milliseconds")


def record(call_id: str, **fields) -> dict:
    body = {"call_id": call_id, "caller": "0812*****78", "channel": "PJSIP/x-1",
            "extension": "1500400", "started_at": ago(minutes=5), "ended_at": ago(minutes=4),
            "outcome": "completed", "transfer_reason": None, "verified": True,
            "member_status": "AKTIF", "identifier_masked": "0001******890",
            "participant_ref": "ref-a", "menu_keys": ["1"], "membership_latency_ms": 12.5,
            "membership_lookups": 1, "time_to_status_ms": None, "missing_prompts": [],
            "transcript": ["ivr: welcome", "caller: 1"]}
    body.update(fields)
    return body


async def test_records_come_back_with_their_fields_and_no_card(store):
    first, second = record("c1"), record("c2", verified=False, participant_ref=None)
    await store.put_records([first, second], "host:/var/calls.jsonl", 1234)
    assert await store.get_record("c1") == {**first, "card": None}
    assert await store.get_record("c2") == {**second, "card": None}
    assert await store.get_record("nope") is None
    assert await store.forwarded_offset("host:/var/calls.jsonl") == 1234
    assert await store.forwarded_offset("other") == 0


async def test_a_record_sent_again_is_stored_once_and_a_newer_one_replaces_it(store):
    await store.put_records([record("c1"), record("c2", started_at=ago(days=1))], "s", 10)
    await store.put_records([record("c1"), record("c2", started_at=ago(days=1))], "s", 10)
    await store.put_records([record("c3", participant_ref="other")], "s", 20)
    assert [h["call_id"] for h in await store.history("ref-a", "c3")] == ["c1", "c2"]
    await store.put_records([record("c1", outcome="transferred", transfer_reason="menu")],
                            "s", 30)
    assert (await store.get_record("c1"))["outcome"] == "transferred"
    assert await store.forwarded_offset("s") == 30
    # one batch holding one call twice: the later line wins, as in the file
    await store.put_records([record("c4", outcome="error"), record("c4", outcome="abandoned")],
                            "s", 40)
    assert (await store.get_record("c4"))["outcome"] == "abandoned"


async def test_a_batch_with_a_bad_record_stores_nothing_not_even_its_offset(store):
    await store.put_records([record("c1")], "s", 100)
    with pytest.raises(ValueError):
        await store.put_records([record("c2"), {"caller": "x"}], "s", 200)
    with pytest.raises(ValueError):
        await store.put_records([record("c3", started_at="yesterday")], "s", 300)
    assert await store.get_record("c2") is None and await store.get_record("c3") is None
    assert await store.forwarded_offset("s") == 100


async def test_the_card_may_come_before_or_after_the_record(store):
    await store.set_card("early", "0001234567890")
    assert await store.get_record("early") is None     # nothing to show before the record
    await store.put_records([record("early")], "s", 1)
    assert (await store.get_record("early"))["card"] == "0001234567890"
    await store.put_records([record("late")], "s", 2)
    await store.set_card("late", "0001100000011")
    got = await store.get_record("late")
    assert got["card"] == "0001100000011" and got["identifier_masked"] == "0001******890"
    await store.put_records([record("late")], "s", 3)   # a re-sent record keeps the card
    assert (await store.get_record("late"))["card"] == "0001100000011"


async def test_queue_history_and_the_time_waited(store):
    await store.queue_joined("q1", "2026-12-01T10:00:00.000+00:00")
    assert await store.get_queue("q1") == {"joined_at": "2026-12-01T10:00:00.000+00:00",
                                           "waited_s": None, "answered_by": None,
                                           "result": None}
    # a resync repeats the join: the first one stands
    await store.queue_joined("q1", "2026-12-01T10:00:30.000+00:00")
    await store.queue_answered("q1", "agent1", "2026-12-01T10:00:42.500+00:00")
    await store.queue_left("q1", "answered", "2026-12-01T10:05:00.000+00:00")
    assert await store.get_queue("q1") == {"joined_at": "2026-12-01T10:00:00.000+00:00",
                                           "waited_s": 42.5, "answered_by": "agent1",
                                           "result": "answered"}
    # abandoned: waited until leaving; times in another zone are the same instants
    await store.queue_joined("q2", "2026-12-01T17:00:00+07:00")
    await store.queue_left("q2", "abandoned", "2026-12-01T10:01:10Z")
    assert await store.get_queue("q2") == {"joined_at": "2026-12-01T10:00:00.000+00:00",
                                           "waited_s": 70.0, "answered_by": None,
                                           "result": "abandoned"}
    assert await store.get_queue("never") is None


async def test_queue_events_may_come_in_any_order_and_a_later_join_starts_again(store):
    await store.queue_answered("q1", "agent2", "2026-12-01T10:00:05.000+00:00")
    await store.queue_joined("q1", "2026-12-01T10:00:00.000+00:00")
    assert (await store.get_queue("q1"))["waited_s"] == 5.0
    await store.queue_left("q1", "callback", "2026-12-01T10:00:06.000+00:00")
    await store.queue_joined("q1", "2026-12-01T11:00:00.000+00:00", kind="callback")
    assert await store.get_queue("q1") == {"joined_at": "2026-12-01T11:00:00.000+00:00",
                                           "waited_s": None, "answered_by": None,
                                           "result": None}


async def test_one_wrapup_per_call_the_second_replaces_the_first(store):
    assert await store.get_wrapup("w1") is None
    first = await store.put_wrapup("w1", "agent1", "resolved", "paid at the counter")
    assert first["agent"] == "agent1" and first["disposition"] == "resolved"
    assert datetime.fromisoformat(first["at"]) > datetime.now(timezone.utc) - timedelta(minutes=1)
    assert await store.get_wrapup("w1") == first
    second = await store.put_wrapup("w1", "agent2", "escalated", "")
    assert await store.get_wrapup("w1") == second != first


async def test_history_lists_earlier_contacts_of_one_participant_newest_first(store):
    await store.put_records([
        record("now", started_at=ago(minutes=1)),
        record("yesterday", started_at=ago(days=1), outcome="transferred",
               transfer_reason="caller_request"),
        record("last-week", started_at=ago(days=7)),
        record("long-ago", started_at=ago(days=40)),
        record("someone-else", participant_ref="ref-b", started_at=ago(days=2)),
        record("unverified", participant_ref=None, verified=False, started_at=ago(days=2)),
    ], "s", 1)
    await store.put_wrapup("yesterday", "agent1", "resolved", "")
    history = await store.history("ref-a", "now")
    assert history == [
        {"call_id": "yesterday", "started_at": history[0]["started_at"],
         "outcome": "transferred", "transfer_reason": "caller_request",
         "disposition": "resolved"},
        {"call_id": "last-week", "started_at": history[1]["started_at"],
         "outcome": "completed", "transfer_reason": None, "disposition": None}]
    assert history[0]["started_at"] > history[1]["started_at"]
    assert [h["call_id"] for h in await store.history("ref-a", "now", days=3)] == ["yesterday"]
    assert [h["call_id"] for h in await store.history("ref-a", "x", days=60)] == \
        ["now", "yesterday", "last-week", "long-ago"]


async def test_the_audit_keeps_who_opened_which_call(store):
    await store.audit("agent1", "c1", "context")
    await store.audit("agent2", "c2", "context")
    await store.audit("agent1", "c1", "wrapup")
    everything = await store.audit_log()
    assert [(a["agent"], a["call_id"], a["action"]) for a in everything] == [
        ("agent1", "c1", "context"), ("agent2", "c2", "context"), ("agent1", "c1", "wrapup")]
    assert all(datetime.fromisoformat(a["at"]).tzinfo is not None for a in everything)
    assert [a["action"] for a in await store.audit_log("c1")] == ["context", "wrapup"]
    assert await store.audit_log("none") == []


@pytest.mark.parametrize("call", [
    lambda s: s.set_card("c1", "0001-234"),
    lambda s: s.set_card("c1", "０００１２３"),            # digits, but not ASCII ones
    lambda s: s.set_card("c\x001", "0001234567890"),
    lambda s: s.set_card("c" * 129, "0001234567890"),
    lambda s: s.set_card(42, "0001234567890"),
    lambda s: s.queue_joined("c1", "not a time"),
    lambda s: s.queue_joined("c1", "2026-12-01T10:00:00", kind=""),
    lambda s: s.queue_left("c1", "evaporated", "2026-12-01T10:00:00Z"),
    lambda s: s.queue_answered("c1", "agent\n1", "2026-12-01T10:00:00Z"),
    lambda s: s.put_wrapup("c1", "agent1", "resolved", "x" * 2001),
    lambda s: s.put_wrapup("c1", "agent1", "", "note"),
    lambda s: s.audit("agent1", "", "context"),
    lambda s: s.put_records([record("ok"), record("c\x00")], "s", 1),
    lambda s: s.put_records([["not", "a", "record"]], "s", 1),
])
async def test_hostile_input_is_refused_before_it_reaches_the_engine(store, call):
    with pytest.raises(ValueError):
        await call(store)
    assert await store.get_record("ok") is None and await store.get_queue("c1") is None


async def test_text_is_stored_as_text_never_as_sql(store):
    evil = "x'); DROP TABLE calls; --"
    await store.put_records([record(evil, transcript=["a \x00 nul", "ünïcode ✓"])], "s", 1)
    await store.put_wrapup(evil, "agent1", "resolved", evil)
    got = await store.get_record(evil)
    assert got["call_id"] == evil and got["transcript"] == ["a  nul", "ünïcode ✓"]
    assert (await store.get_wrapup(evil))["note"] == evil


async def test_open_is_idempotent_and_the_schema_survives_reopening(store, tmp_path):
    await store.put_records([record("kept")], "s", 7)
    await store.open()
    await store.close()
    await store.open()
    assert (await store.get_record("kept"))["call_id"] == "kept"
    assert await store.forwarded_offset("s") == 7


async def test_a_closed_store_is_unavailable(store):
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get_record("c1")
    with pytest.raises(StoreUnavailable):
        await store.put_records([record("c1")], "s", 1)
    await store.open()   # for the fixture's close


async def test_an_unreachable_postgres_is_unavailable_and_the_url_is_not_told():
    s = PostgresStore(f"postgresql://u:hunter2-secret@127.0.0.1:{free_port()}/db")
    with pytest.raises(StoreUnavailable) as caught:
        await s.open()
    assert "hunter2" not in str(caught.value)
    with pytest.raises(StoreUnavailable):
        await s.get_record("c1")


async def test_an_sqlite_file_that_cannot_be_made_is_unavailable(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreUnavailable):
        await SqliteStore(str(tmp_path / "a-file" / "store.sqlite3")).open()


def test_open_store_chooses_the_engine_from_the_settings(tmp_path):
    sqlite = open_store(Settings.from_env({"IVR_STORE_DB": str(tmp_path / "s.db")}))
    assert isinstance(sqlite, SqliteStore) and sqlite.path == str(tmp_path / "s.db")
    pg = open_store(Settings.from_env({"IVR_STORE_URL": "postgresql://u:p@db.example/ivr"}))
    assert isinstance(pg, PostgresStore)
    with pytest.raises(ValueError) as caught:
        open_store(Settings.from_env({"IVR_STORE_URL": "mysql://u:topsecret@db/ivr"}))
    assert "topsecret" not in str(caught.value)


_OTHER_PROCESS = textwrap.dedent("""
    import asyncio, sys
    from ivr.store.sqlite import SqliteStore
    async def main():
        s = SqliteStore(sys.argv[1])
        await s.open()
        await asyncio.gather(*(s.audit("agent-b", f"b{i}", "context") for i in range(200)))
        await s.close()
    asyncio.run(main())
""")


async def test_two_processes_share_one_sqlite_file(tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    mine = SqliteStore(path)
    await mine.open()
    other = await asyncio.create_subprocess_exec(sys.executable, "-c", _OTHER_PROCESS, path,
                                                 stderr=subprocess.PIPE)
    await asyncio.gather(*(mine.audit("agent-a", f"a{i}", "context") for i in range(200)),
                         *(mine.put_records([record(f"r{i}")], "s", i) for i in range(50)))
    _, err = await other.communicate()
    assert other.returncode == 0, err.decode()[-2000:]
    log = await mine.audit_log()
    assert sorted(a["agent"] for a in log) == ["agent-a"] * 200 + ["agent-b"] * 200
    assert await mine.forwarded_offset("s") == 49
    await mine.close()


async def test_service_settings_are_kept_with_who_and_when_and_audited(store):
    assert await store.service_settings() == {}
    await store.set_service_setting("announcement", "announcement-maintenance", "ops-siti")
    await store.set_service_setting("mode", "agents_only", "ops-budi")
    await store.set_service_setting("announcement", "", "ops-budi")
    settings = await store.service_settings()
    assert {k: v["value"] for k, v in settings.items()} == {"announcement": "",
                                                           "mode": "agents_only"}
    assert settings["announcement"]["changed_by"] == "ops-budi"
    assert settings["mode"]["changed_at"].endswith("+00:00")
    log = await store.audit_log("service-settings")
    assert [(e["agent"], e["action"]) for e in log] == [
        ("ops-siti", "announcement=announcement-maintenance"),
        ("ops-budi", "mode=agents_only"), ("ops-budi", "announcement=")]
    with pytest.raises(ValueError):
        await store.set_service_setting("mode", "x", "bad\nname")


# -- callbacks (waiting for an agent, issue 13)

def callback(cid: str, call_id: str = "c1", **fields) -> dict:
    body = {"id": cid, "call_id": call_id, "number": "081234567890",
            "number_masked": "0812*****890", "joined_at": ago(minutes=10),
            "due_at": ago(seconds=1), "status": "scheduled"}
    body.update(fields)
    return body


async def test_callbacks_keep_their_attempts_and_come_due_in_join_order(store):
    await store.callback_create(callback("late", "c2", joined_at=ago(minutes=5)))
    await store.callback_create(callback("early", "c1", joined_at=ago(minutes=9)))
    await store.callback_create(callback("future", "c3", due_at=ago(minutes=-30)))
    due = await store.callbacks_due(ago(seconds=0))
    assert [c["id"] for c in due] == ["early", "late"]
    assert due[0]["number"] == "081234567890" and due[0]["number_masked"] == "0812*****890"
    await store.callback_set("early", "queued")
    assert [c["id"] for c in await store.callbacks_due(ago(seconds=0))] == ["late"]
    assert await store.callback_attempt("early", "busy", ago(seconds=3)) == 1
    assert await store.callback_attempt("early", "answer", ago(seconds=1)) == 2
    await store.callback_set("early", "completed")
    got = await store.get_callback("early")
    assert got["status"] == "completed"
    assert [(a["n"], a["result"]) for a in got["attempts"]] == [(1, "busy"), (2, "answer")]
    await store.callback_set("late", "scheduled", due_at=ago(minutes=-5))
    assert await store.callbacks_due(ago(seconds=0)) == []
    assert [c["id"] for c in await store.callbacks("c2")] == ["late"]
    assert [c["id"] for c in await store.callbacks(status="scheduled")] == ["future", "late"]
    assert await store.callbacks("c2", status="completed") == []
    # from one status only: two desks sharing the store never both take one callback
    assert await store.callback_set("late", "queued", expect="scheduled") is True
    assert await store.callback_set("late", "queued", expect="scheduled") is False
    assert (await store.get_callback("late"))["status"] == "queued"
    assert await store.get_callback("nope") is None


async def test_the_board_shows_open_callbacks_and_those_ended_lately(store):
    await store.callback_create(callback("old", "c1", joined_at=ago(minutes=50)))
    await store.callback_attempt("old", "busy", ago(minutes=40))
    await store.callback_set("old", "failed")
    await asyncio.sleep(0.01)
    since = ago(seconds=0)
    await asyncio.sleep(0.01)
    await store.callback_create(callback("waiting", "c2", joined_at=ago(minutes=9)))
    await store.callback_create(callback("later", "c3", due_at=ago(minutes=-30)))
    await store.callback_create(callback("done", "c4", joined_at=ago(minutes=20)))
    await store.callback_attempt("done", "answer", ago(seconds=2))
    await store.callback_set("done", "completed")
    board = await store.callbacks_board(since)
    assert [c["id"] for c in board] == ["done", "later", "waiting"]     # by first join
    assert [a["result"] for a in board[0]["attempts"]] == ["answer"]
    # an ended callback stays on the board only as long as asked
    assert "old" in [c["id"] for c in await store.callbacks_board(ago(minutes=60))]
    # more than the board holds: every open one first, then the latest ended
    assert [c["id"] for c in await store.callbacks_board(since, limit=2)] == ["later", "waiting"]
    await store.callback_set("later", "failed")
    assert [c["id"] for c in await store.callbacks_board(since, limit=2)] == ["later", "waiting"]
    assert [c["id"] for c in await store.callbacks_board(ago(minutes=60), limit=3)] == [
        "done", "later", "waiting"]                 # "old" ended before the other two


async def test_a_callback_needs_a_real_number_and_status(store):
    for bad in ({"number": "0812x4567890"}, {"number": "123"}, {"status": "done"},
                {"number": "٠٨١٢٣٤٥٦٧٨٩٠"}, {"joined_at": "yesterday"}):
        with pytest.raises(ValueError):
            await store.callback_create(callback("x", **bad))
    with pytest.raises(ValueError):
        await store.callback_set("x", "whatever")
    assert await store.callbacks() == []


async def test_queue_stats_are_the_answered_calls_since_then(store):
    assert (await store.queue_stats(ago(hours=1)))["answered"] == 0
    for n, (wait, talk) in enumerate([(30, 120), (90, 240), (60, 180)]):
        cid = f"q{n}"
        await store.queue_joined(cid, ago(seconds=1000 + wait))
        await store.queue_answered(cid, "agent1", ago(seconds=1000))
        await store.queue_left(cid, "answered", ago(seconds=1000 - talk))
    await store.queue_joined("old", ago(hours=3))
    await store.queue_answered("old", "agent1", ago(hours=2, minutes=59))
    await store.queue_left("old", "answered", ago(hours=2))
    stats = await store.queue_stats(ago(hours=1))
    assert stats["answered"] == 3
    assert stats["mean_talk_s"] == pytest.approx(180, abs=0.5)
    assert stats["mean_wait_s"] == pytest.approx(60, abs=0.5)


async def test_the_place_in_line_counts_waiting_callers_and_callbacks_that_joined_earlier(store):
    me, since, now_ = ago(minutes=5), ago(hours=2), ago(seconds=0)
    assert await store.queue_ahead(me, now_, since) == 0
    await store.queue_joined("w1", ago(minutes=8))                 # waiting: ahead
    await store.queue_joined("w2", ago(minutes=7))                 # answered: not waiting
    await store.queue_answered("w2", "agent1", ago(minutes=1))
    await store.queue_joined("w3", ago(minutes=6))                 # gone
    await store.queue_left("w3", "abandoned", ago(minutes=2))
    await store.queue_joined("w4", ago(minutes=4))                 # joined after me
    await store.queue_joined("w5", ago(hours=3))                   # stale: before the window
    await store.queue_joined("c1", ago(minutes=9))                 # took a callback
    await store.queue_left("c1", "callback", ago(minutes=3))
    await store.callback_create(callback("cb1", "c1", joined_at=ago(minutes=9)))
    await store.callback_create(callback("cb2", "c2", joined_at=ago(minutes=9),
                                         due_at=ago(minutes=-60)))  # tomorrow: not in line
    assert await store.queue_ahead(me, now_, since) == 2            # w1 and cb1
    await store.callback_set("cb1", "queued")
    await asyncio.sleep(0.01)
    await store.queue_answered("c1", "agent1", ago(seconds=0))      # its agent answered
    assert await store.queue_ahead(me, ago(seconds=0), since) == 1
    await asyncio.sleep(0.01)
    await store.callback_set("cb1", "scheduled", due_at=ago(seconds=1))   # to be retried
    assert await store.queue_ahead(me, ago(seconds=0), since) == 2
    # A callback keeps its place however long ago its caller first joined (after hours)
    await store.callback_create(callback("cb0", "c0", joined_at=ago(hours=14)))
    assert await store.queue_ahead(me, ago(seconds=0), since) == 3
    await store.callback_set("cb0", "completed")
    # A caller still finishing the callback dialog is counted once, as the callback.
    await store.queue_joined("c3", ago(minutes=8, seconds=30))
    await store.callback_create(callback("cb3", "c3", joined_at=ago(minutes=8, seconds=30)))
    assert await store.queue_ahead(me, ago(seconds=0), since) == 3
