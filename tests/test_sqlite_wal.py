"""Opening one SQLite file from many connections at once (ivr/sqlite_wal.py): the desk's
store and the IVR's forwarder at start, the lockout counts of ``ivr serve --workers``."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from ivr.sqlite_wal import open_wal

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT);"


async def test_many_opening_one_new_file_at_once_all_succeed(tmp_path):
    """Switching a new file to WAL can meet "database is locked" without waiting on the
    busy timeout (about one open in a thousand did; this fails most runs without the
    retry)."""
    for n in range(80):
        path = str(tmp_path / f"s{n}.sqlite3")
        results = await asyncio.gather(*(open_wal(path, SCHEMA) for _ in range(48)),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for db in results:
            if not isinstance(db, BaseException):
                await db.close()
        assert failed == []
    db = await open_wal(str(tmp_path / "s0.sqlite3"), SCHEMA)
    assert (await db.execute_fetchall("PRAGMA journal_mode")) == [("wal",)]
    await db.close()


async def test_an_error_other_than_a_lock_is_raised_at_once(tmp_path):
    (tmp_path / "not-a-database").write_bytes(b"this is not SQLite" * 100)
    started = time.monotonic()
    with pytest.raises(sqlite3.DatabaseError):
        await open_wal(str(tmp_path / "not-a-database"), SCHEMA)
    assert time.monotonic() - started < 2
