"""The record forwarder: the IVR's call-record file into the store, against SQLite and a
real PostgreSQL server (one of them stopped for 10 s while calls go on), and a whole call
through the running hotline ending up in the store."""
from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import replace

import asyncpg
import pytest

from ivr.app import running_server
from ivr.emulator import place_call
from ivr.membership.demo import PARTICIPANTS
from ivr.records import CallRecord, RecordWriter
from ivr.store import StoreUnavailable, open_store
from ivr.store.forwarder import RecordForwarder
from ivr.store.postgres import PostgresStore
from ivr.store.sqlite import SqliteStore

from .conftest import EVIDENCE, free_port
from .postgres import PostgresServer, postgres_server  # noqa: F401  (session fixture)

SITI = PARTICIPANTS[0]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    """An empty store of each engine, as (IVR_STORE_URL, IVR_STORE_DB)."""
    if request.param == "sqlite":
        return "", str(tmp_path / "store.sqlite3")
    return request.getfixturevalue("postgres_server").new_database(), ""


async def make_store(url_and_db):
    url, db = url_and_db
    store = PostgresStore(url) if url else SqliteStore(db)
    await store.open()
    return store


async def eventually(check, seconds: float = 60.0, step: float = 0.05):
    """``await check()`` until it is true (a bound for a hung test, not a timing goal)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        result = await check()
        if result:
            return result
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(step)


def call_record(i: int, prefix: str = "call") -> CallRecord:
    return CallRecord(call_id=f"{prefix}-{i}", caller="0812*****78", outcome="completed",
                      participant_ref="ref-x", identifier_masked="0001******890",
                      transcript=[f"ivr: line {i}"])


async def stored(store, ids) -> list[str]:
    """The ids among ``ids`` that the store has."""
    return [i for i in ids if await store.get_record(i) is not None]


@pytest.fixture
async def forwarders():
    """Forwarders made by a test, stopped after it whatever happens."""
    made = []
    yield made
    for f in made:
        await f.stop(timeout=1)


def forwarder(forwarders, store, path, **kwargs) -> RecordForwarder:
    f = RecordForwarder(store, path, **kwargs)
    forwarders.append(f)
    return f


async def test_records_written_arrive_in_the_store_and_the_offset_follows_the_file(
        store_url, tmp_path, forwarders):
    path = str(tmp_path / "calls.jsonl")
    store = await make_store(store_url)
    fwd = forwarder(forwarders, store, path)
    writer = RecordWriter(path, on_written=fwd.wake)
    await fwd.start()
    records = [call_record(i) for i in range(120)]
    for r in records:
        writer.write(r)
    ids = [r.call_id for r in records]
    await eventually(lambda: _all_stored(store, ids))
    got = await store.get_record("call-7")
    assert got == {**json.loads(records[7].to_json()), "card": None}
    writer.close()
    await eventually(lambda: _offset_is(store, fwd.source, os.path.getsize(path)))
    assert fwd.forwarded == 120
    await fwd.stop()
    await store.close()


async def _all_stored(store, ids) -> bool:
    return len(await stored(store, ids)) == len(ids)


async def _offset_is(store, source, size) -> bool:
    return await store.forwarded_offset(source) == size


async def test_sending_the_file_again_is_harmless(store_url, tmp_path, forwarders):
    path = str(tmp_path / "calls.jsonl")
    writer = RecordWriter(path)
    for i in range(30):
        writer.write(call_record(i))
    writer.close()
    store = await make_store(store_url)
    first = forwarder(forwarders, store, path)
    await first.start()
    await eventually(lambda: _offset_is(store, first.source, os.path.getsize(path)))
    await first.stop()
    # the offset lost (as if the store had committed and the answer never came back)
    await store.put_records([], first.source, 0)
    again = forwarder(forwarders, store, path)
    await again.start()
    await eventually(lambda: _offset_is(store, again.source, os.path.getsize(path)))
    await again.stop()
    assert first.forwarded == again.forwarded == 30
    history = await store.history("ref-x", "none", days=1)
    assert sorted(h["call_id"] for h in history) == sorted(f"call-{i}" for i in range(30))
    await store.close()


class CountingStore:
    """A real store, counting the records each put hands it."""

    def __init__(self, store) -> None:
        self.store = store
        self.records: list[str] = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    async def put_records(self, records, source, offset):
        await self.store.put_records(records, source, offset)
        self.records += [r["call_id"] for r in records]


async def test_two_forwarders_on_one_file_deliver_each_record_once(tmp_path, forwarders):
    path = str(tmp_path / "calls.jsonl")
    db = str(tmp_path / "store.sqlite3")
    a, b = CountingStore(SqliteStore(db)), CountingStore(SqliteStore(db))
    await a.store.open()
    await b.store.open()
    fa = forwarder(forwarders, a, path, lock_retry=0.1)
    fb = forwarder(forwarders, b, path, lock_retry=0.1)
    writer = RecordWriter(path)
    await fa.start()
    await eventually(lambda: _true(fa.holds_lock))
    await fb.start()
    for i in range(100):
        writer.write(call_record(i))
    writer.flush()
    await eventually(lambda: _true(len(a.records) == 100))
    assert b.records == [] and not fb.holds_lock
    await fa.stop()                 # the forwarding worker goes away: the other takes over
    for i in range(100, 150):
        writer.write(call_record(i))
    writer.close()
    await eventually(lambda: _true(len(b.records) == 50))
    assert sorted(a.records + b.records) == sorted(f"call-{i}" for i in range(150))
    await fb.stop()
    await a.store.close()
    await b.store.close()


async def _true(value) -> bool:
    return bool(value)


async def test_a_partial_last_line_waits_until_it_is_complete(tmp_path, forwarders):
    path = tmp_path / "calls.jsonl"
    first, second = call_record(1).to_json() + "\n", call_record(2).to_json() + "\n"
    path.write_text(first + second[:40])
    store = SqliteStore(str(tmp_path / "store.sqlite3"))
    await store.open()
    fwd = forwarder(forwarders, store, str(path), poll=0.05)
    await fwd.start()
    await eventually(lambda: _offset_is(store, fwd.source, len(first.encode())))
    await asyncio.sleep(0.5)        # ten polls: the half line is still not sent
    assert await store.get_record("call-2") is None
    assert await store.forwarded_offset(fwd.source) == len(first.encode())
    with open(path, "a") as f:
        f.write(second[40:])
    await eventually(lambda: _offset_is(store, fwd.source, len((first + second).encode())))
    assert (await store.get_record("call-2"))["transcript"] == ["ivr: line 2"]
    await fwd.stop()
    await store.close()


async def test_a_missing_file_is_waited_for_and_a_replaced_one_is_read_from_its_start(
        tmp_path, forwarders):
    path = tmp_path / "later" / "calls.jsonl"
    store = SqliteStore(str(tmp_path / "store.sqlite3"))
    await store.open()
    fwd = forwarder(forwarders, store, str(path), poll=0.05)
    await fwd.start()
    await asyncio.sleep(0.3)
    writer = RecordWriter(str(path), on_written=fwd.wake)
    for i in range(5):
        writer.write(call_record(i))
    writer.close()
    await eventually(lambda: _all_stored(store, [f"call-{i}" for i in range(5)]))
    path.unlink()                   # rotated away; a new, shorter file takes its place
    path.write_text(call_record(99, "new").to_json() + "\n")
    await eventually(lambda: _all_stored(store, ["new-99"]))
    assert await store.forwarded_offset(fwd.source) == path.stat().st_size
    await fwd.stop()
    await store.close()


CARD, NIK = SITI["card_number"], SITI["nik"]


async def test_bad_lines_are_skipped_and_the_logs_never_show_what_they_held(
        tmp_path, forwarders, caplog):
    path = tmp_path / "calls.jsonl"
    lines = [
        call_record(1).to_json(),
        f"not json {CARD} {NIK}",
        json.dumps({"caller": NIK, "note": "no call id"}),
        json.dumps([CARD]),
        json.dumps({**json.loads(call_record(2).to_json()), "started_at": f"{CARD}"}),
        "",
        '{"call_id": "x' + "9" * 3000 + '"',                # longer than a batch may be
        call_record(3).to_json(),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe" + CARD.encode() + b"\n"
                     + (call_record(4).to_json() + "\n").encode())
    store = SqliteStore(str(tmp_path / "store.sqlite3"))
    await store.open()
    caplog.set_level(logging.DEBUG, logger="ivr.store")
    fwd = forwarder(forwarders, store, str(path), batch_bytes=2048, poll=0.05)
    await fwd.start()
    await eventually(lambda: _offset_is(store, fwd.source, path.stat().st_size))
    assert await stored(store, [f"call-{i}" for i in range(1, 5)]) == ["call-1", "call-3",
                                                                        "call-4"]
    await fwd.stop()
    await store.close()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ivr.store")]
    (EVIDENCE / "forwarder-bad-lines.log").write_text("\n".join(messages) + "\n")
    assert any("skipped" in m for m in messages)
    text = "\n".join(messages)
    for secret in (CARD, NIK, "0812", "9" * 20):
        assert secret not in text


class RefusingStore:
    """A real store that refuses one record as a broken engine might (a fake fault)."""

    def __init__(self, store, refused: str) -> None:
        self.store, self.refused = store, refused

    def __getattr__(self, name):
        return getattr(self.store, name)

    async def put_records(self, records, source, offset):
        if any(r["call_id"] == self.refused for r in records):
            raise RuntimeError(f"refused {CARD}")
        await self.store.put_records(records, source, offset)


async def test_a_record_the_store_refuses_does_not_hold_back_the_others(
        tmp_path, forwarders, caplog):
    path = str(tmp_path / "calls.jsonl")
    writer = RecordWriter(path)
    for i in range(10):
        writer.write(call_record(i))
    writer.close()
    store = SqliteStore(str(tmp_path / "store.sqlite3"))
    await store.open()
    caplog.set_level(logging.DEBUG, logger="ivr.store")
    fwd = forwarder(forwarders, RefusingStore(store, "call-4"), path)
    await fwd.start()
    await eventually(lambda: _offset_is(store, fwd.source, os.path.getsize(path)))
    assert await stored(store, [f"call-{i}" for i in range(10)]) == \
        [f"call-{i}" for i in range(10) if i != 4]
    assert fwd.forwarded == 9
    await fwd.stop()
    await store.close()
    assert CARD not in caplog.text


async def test_the_store_down_for_ten_seconds_loses_and_duplicates_nothing(
        tmp_path, caplog, settings):
    """A real PostgreSQL server stopped while calls go on through the running hotline;
    started again 10 s later: every call's record arrives, once."""
    caplog.set_level(logging.INFO, logger="ivr.store")
    with PostgresServer() as server:
        url = server.new_database()
        settings = replace(settings, store_url=url,
                           call_records=str(EVIDENCE / f"calls-down-{tmp_path.name}.jsonl"))
        calls_done: list[str] = []
        async with running_server(settings) as (agi, app):
            stop_calling = asyncio.Event()

            async def caller(n: int) -> None:
                i = 0
                while not stop_calling.is_set():
                    call = await place_call("127.0.0.1", agi.port, "0",
                                            caller_id=f"0813{n:04d}{i:04d}")
                    calls_done.append(call.variables["IVR_CALL_ID"])
                    i += 1

            callers = [asyncio.create_task(caller(n)) for n in range(3)]
            await asyncio.sleep(2)
            await asyncio.to_thread(server.stop)
            stopped_at = len(calls_done)
            await asyncio.sleep(10)
            during = len(calls_done) - stopped_at
            await asyncio.to_thread(server.start)
            await asyncio.sleep(1)
            stop_calling.set()
            await asyncio.gather(*callers)
            assert app.records.flush()
            size = os.path.getsize(settings.call_records)
            conn = await asyncpg.connect(url)
            try:
                await eventually(lambda: _offset_is_sql(conn, size))
                ids = [row[0] for row in await conn.fetch("SELECT call_id FROM calls")]
            finally:
                await conn.close()
    assert during > 10, "calls went on while the store was down"
    assert len(calls_done) == len(set(calls_done))
    assert sorted(ids) == sorted(calls_done)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ivr.store")]
    assert any("store unavailable" in m for m in messages)
    assert any("available again" in m for m in messages)


async def _offset_is_sql(conn, size: int) -> bool:
    return await conn.fetchval("SELECT max(position) FROM forwarder_offsets") == size


@pytest.mark.parametrize("records_to", ["file", "stdout"])
async def test_a_call_through_the_hotline_ends_up_in_the_store(
        store_url, settings, tmp_path, records_to, capfd):
    url, db = store_url
    settings = replace(settings, store_url=url, store_db=db or settings.store_db,
                       store_outbox=str(tmp_path / "outbox.jsonl"))
    if records_to == "stdout":
        settings = replace(settings, call_records="-")
    y, m, d = SITI["birth_date"].split("-")
    async with running_server(settings) as (server, app):
        call = await place_call("127.0.0.1", server.port, f"1 {CARD}# 1 {d}{m}{y} 2 0")
        call_id = call.variables["IVR_CALL_ID"]
        store = open_store(settings)
        await store.open()
        record = await eventually(lambda: store.get_record(call_id))
    await store.close()
    assert record["verified"] is True and record["card"] is None
    assert record["identifier_masked"] == "0001******890"
    assert record["participant_ref"] == app.lockout.pseudonym(CARD)
    assert record["transcript"] and all(CARD not in line for line in record["transcript"])
    assert record["outcome"] == call.variables["IVR_OUTCOME"]
    if records_to == "stdout":
        assert call_id in capfd.readouterr().out
        assert call_id in (tmp_path / "outbox.jsonl").read_text()


async def test_an_unreachable_store_never_stops_the_hotline(settings, tmp_path, caplog):
    settings = replace(settings, store_url=f"postgresql://u:p@127.0.0.1:{free_port()}/db")
    with caplog.at_level(logging.INFO, logger="ivr.store.forwarder"):
        async with running_server(settings) as (server, app):
            call = await place_call("127.0.0.1", server.port, "0")
            assert call.variables["IVR_OUTCOME"]
            assert app.records.flush()
    assert "store unavailable" in caplog.text
    assert "starting again" not in caplog.text          # stopping while it waits: no error
    with pytest.raises(StoreUnavailable):
        await open_store(settings).open()
