"""The store in one SQLite file (aiosqlite), the default engine.

The IVR (its record forwarder) and the desk are two processes sharing the file: WAL lets
readers go on while one writes; every write is one ``BEGIN IMMEDIATE`` transaction, which
takes the file's write lock at once (waiting up to ``BUSY_MS`` for the other process)
instead of failing half-way when a read transaction would have to become a write one.
Reads fetch whole results: no cursor stays open across an await (see ``ivr.lockout``).
"""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import AsyncIterator

import aiosqlite

from ..sqlite_wal import open_wal
from . import StoreUnavailable
from .rows import (BOARD_LIMIT, BOARD_ORDER, HISTORY_LIMIT, MAX_TEXT, QUEUE_RESULTS,
                   SERVICE_AUDIT, STATS_LIMIT, callbacks_out, canonical, check_callback,
                   check_card, check_status, check_text, iso, now, parse_time, queue_out,
                   record_out, record_row, since, stats_out)

BUSY_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    started_at TEXT, ended_at TEXT, participant_ref TEXT, outcome TEXT,
    transfer_reason TEXT, verified INTEGER,
    record TEXT,            -- the whole call record (JSON); NULL until it arrives
    card TEXT               -- the verified card number, set by the desk only
);
CREATE INDEX IF NOT EXISTS calls_participant ON calls (participant_ref, started_at);
CREATE TABLE IF NOT EXISTS queue_calls (
    call_id TEXT PRIMARY KEY, kind TEXT, joined_at TEXT, answered_at TEXT,
    answered_by TEXT, left_at TEXT, result TEXT
);
CREATE TABLE IF NOT EXISTS wrapups (
    call_id TEXT PRIMARY KEY, agent TEXT NOT NULL, disposition TEXT NOT NULL,
    note TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, agent TEXT NOT NULL, call_id TEXT NOT NULL,
    action TEXT NOT NULL, at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_call ON audit (call_id, id);
CREATE TABLE IF NOT EXISTS callbacks (
    id TEXT PRIMARY KEY, call_id TEXT NOT NULL,
    number TEXT NOT NULL,   -- in clear: the trunk dials it; never logged, never on the desk
    number_masked TEXT NOT NULL, joined_at TEXT NOT NULL, due_at TEXT NOT NULL,
    status TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (status, due_at);
CREATE TABLE IF NOT EXISTS callback_attempts (
    callback_id TEXT NOT NULL, n INTEGER NOT NULL, at TEXT NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (callback_id, n)
);
CREATE TABLE IF NOT EXISTS forwarder_offsets (
    source TEXT PRIMARY KEY, position INTEGER NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS service_settings (
    name TEXT PRIMARY KEY, value TEXT NOT NULL, changed_by TEXT NOT NULL, changed_at TEXT NOT NULL
);
"""

_PUT_RECORD = """
INSERT INTO calls (call_id, started_at, ended_at, participant_ref, outcome, transfer_reason,
                   verified, record)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_id) DO UPDATE SET
    started_at = excluded.started_at, ended_at = excluded.ended_at,
    participant_ref = excluded.participant_ref, outcome = excluded.outcome,
    transfer_reason = excluded.transfer_reason, verified = excluded.verified,
    record = excluded.record
"""

# A join after the call's last queue episode ended starts a new one; otherwise the first
# join seen stands (a resync repeats joins).
_JOIN = """
INSERT INTO queue_calls (call_id, kind, joined_at) VALUES (?, ?, ?)
ON CONFLICT (call_id) DO UPDATE SET
    kind = excluded.kind,
    joined_at = CASE WHEN queue_calls.result IS NOT NULL AND queue_calls.left_at < excluded.joined_at
                     THEN excluded.joined_at
                     ELSE coalesce(queue_calls.joined_at, excluded.joined_at) END,
    answered_at = CASE WHEN queue_calls.result IS NOT NULL AND queue_calls.left_at < excluded.joined_at
                       THEN NULL ELSE queue_calls.answered_at END,
    answered_by = CASE WHEN queue_calls.result IS NOT NULL AND queue_calls.left_at < excluded.joined_at
                       THEN NULL ELSE queue_calls.answered_by END,
    left_at = CASE WHEN queue_calls.result IS NOT NULL AND queue_calls.left_at < excluded.joined_at
                   THEN NULL ELSE queue_calls.left_at END,
    result = CASE WHEN queue_calls.result IS NOT NULL AND queue_calls.left_at < excluded.joined_at
                  THEN NULL ELSE queue_calls.result END
"""


# Waiting callers (joined since $2, neither answered nor gone) and callbacks waiting their
# turn (due, and not answered since they were last placed: however long ago they first
# joined, an after-hours callback keeps its place), ahead of a first join.
_AHEAD = """
SELECT (SELECT count(*) FROM queue_calls
        WHERE result IS NULL AND answered_at IS NULL AND joined_at < $1 AND joined_at >= $2
          AND call_id NOT IN (SELECT call_id FROM callbacks
                              WHERE status IN ('scheduled', 'queued')))
     + (SELECT count(*) FROM callbacks c LEFT JOIN queue_calls q ON q.call_id = c.call_id
        WHERE c.status IN ('scheduled', 'queued') AND c.due_at <= $3 AND c.joined_at < $1
          AND (q.answered_at IS NULL OR q.answered_at < c.updated_at))
"""


def _time(value: str | None):
    return None if value is None else parse_time(value)


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._write = asyncio.Lock()
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:     # the forwarder and its owner may both open it
            if self._db is None:
                await self._open()

    async def _open(self) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # A commit is not an fsync (NORMAL): a power cut may lose the last batches
            # forwarded, with their offset, so they are forwarded again: nothing is lost.
            self._db = await open_wal(self.path, _SCHEMA, busy_ms=BUSY_MS, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open the SQLite store: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("the store is not open")
        return self._db

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        db = self._conn()
        async with self._write:
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:   # locked past BUSY_MS, disk errors
                raise StoreUnavailable(str(exc)) from exc
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable(str(exc)) from exc
                raise

    async def _fetch(self, sql: str, args: tuple = ()) -> list:
        try:
            return list(await self._conn().execute_fetchall(sql, args))
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    # -- call records ---------------------------------------------------------------------

    async def put_records(self, records: list[dict], source: str, offset: int) -> None:
        check_text(source, "source", MAX_TEXT)
        rows = {}
        for record in records:                 # the last of one call id wins, as in a file
            row = record_row(record)
            rows[row.call_id] = (row.call_id, iso(row.started_at), iso(row.ended_at),
                                 row.participant_ref, row.outcome, row.transfer_reason,
                                 int(row.verified), row.body)
        async with self._transaction() as db:
            if rows:
                await db.executemany(_PUT_RECORD, list(rows.values()))
            await db.execute(
                "INSERT INTO forwarder_offsets (source, position, at) VALUES (?, ?, ?) "
                "ON CONFLICT (source) DO UPDATE SET position = excluded.position, at = excluded.at",
                (source, int(offset), iso(now())))

    async def forwarded_offset(self, source: str) -> int:
        rows = await self._fetch("SELECT position FROM forwarder_offsets WHERE source = ?",
                                 (source,))
        return rows[0][0] if rows else 0

    async def get_record(self, call_id: str) -> dict | None:
        rows = await self._fetch("SELECT record, card FROM calls WHERE call_id = ?", (call_id,))
        if not rows or rows[0][0] is None:
            return None
        return record_out(rows[0][0], rows[0][1])

    async def set_card(self, call_id: str, card: str) -> None:
        args = (check_text(call_id, "call_id"), check_card(card))
        async with self._transaction() as db:
            await db.execute("INSERT INTO calls (call_id, card) VALUES (?, ?) "
                             "ON CONFLICT (call_id) DO UPDATE SET card = excluded.card", args)

    # -- queue history ----------------------------------------------------------------------

    async def queue_joined(self, call_id: str, at: str, kind: str = "caller") -> None:
        args = (check_text(call_id, "call_id"), check_text(kind, "kind"), canonical(at))
        async with self._transaction() as db:
            await db.execute(_JOIN, args)

    async def queue_answered(self, call_id: str, agent: str, at: str) -> None:
        args = (check_text(call_id, "call_id"), canonical(at), check_text(agent, "agent"))
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO queue_calls (call_id, answered_at, answered_by) VALUES (?, ?, ?) "
                "ON CONFLICT (call_id) DO UPDATE SET answered_at = excluded.answered_at, "
                "answered_by = excluded.answered_by", args)

    async def queue_left(self, call_id: str, result: str, at: str) -> None:
        if result not in QUEUE_RESULTS:
            raise ValueError("invalid queue result")
        args = (check_text(call_id, "call_id"), canonical(at), result)
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO queue_calls (call_id, left_at, result) VALUES (?, ?, ?) "
                "ON CONFLICT (call_id) DO UPDATE SET left_at = excluded.left_at, "
                "result = excluded.result", args)

    async def get_queue(self, call_id: str) -> dict | None:
        rows = await self._fetch(
            "SELECT joined_at, answered_at, left_at, answered_by, result FROM queue_calls "
            "WHERE call_id = ?", (call_id,))
        if not rows:
            return None
        joined, answered, left, agent, result = rows[0]
        return queue_out(_time(joined), _time(answered), _time(left), agent, result)

    # -- wrap-ups, history, audit -----------------------------------------------------------

    async def put_wrapup(self, call_id: str, agent: str, disposition: str, note: str) -> dict:
        wrapup = {"agent": check_text(agent, "agent"),
                  "disposition": check_text(disposition, "disposition"),
                  "note": check_text(note, "note", MAX_TEXT, empty=True), "at": iso(now())}
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO wrapups (call_id, agent, disposition, note, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (call_id) DO UPDATE SET "
                "agent = excluded.agent, disposition = excluded.disposition, "
                "note = excluded.note, at = excluded.at",
                (check_text(call_id, "call_id"), *wrapup.values()))
        return wrapup

    async def get_wrapup(self, call_id: str) -> dict | None:
        rows = await self._fetch(
            "SELECT agent, disposition, note, at FROM wrapups WHERE call_id = ?", (call_id,))
        if not rows:
            return None
        agent, disposition, note, at = rows[0]
        return {"agent": agent, "disposition": disposition, "note": note, "at": at}

    async def history(self, participant_ref: str, exclude_call_id: str, days: int = 30
                      ) -> list[dict]:
        rows = await self._fetch(
            "SELECT c.call_id, c.started_at, c.outcome, c.transfer_reason, w.disposition "
            "FROM calls c LEFT JOIN wrapups w ON w.call_id = c.call_id "
            "WHERE c.participant_ref = ? AND c.call_id <> ? AND c.started_at >= ? "
            "ORDER BY c.started_at DESC LIMIT ?",
            (participant_ref, exclude_call_id, iso(since(days)), HISTORY_LIMIT))
        return [{"call_id": call_id, "started_at": started, "outcome": outcome,
                 "transfer_reason": reason, "disposition": disposition}
                for call_id, started, outcome, reason, disposition in rows]

    async def audit(self, agent: str, call_id: str, action: str) -> None:
        args = (check_text(agent, "agent"), check_text(call_id, "call_id"),
                check_text(action, "action", MAX_TEXT), iso(now()))
        async with self._transaction() as db:
            await db.execute("INSERT INTO audit (agent, call_id, action, at) VALUES (?, ?, ?, ?)",
                             args)

    async def set_service_setting(self, name: str, value: str, by: str) -> None:
        args = (check_text(name, "name"), check_text(value, "value", MAX_TEXT, empty=True),
                check_text(by, "changed_by"), iso(now()))
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO service_settings (name, value, changed_by, changed_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "changed_by = excluded.changed_by, changed_at = excluded.changed_at", args)
            await db.execute("INSERT INTO audit (agent, call_id, action, at) VALUES (?, ?, ?, ?)",
                             (args[2], SERVICE_AUDIT, f"{args[0]}={args[1]}", args[3]))

    async def service_settings(self) -> dict[str, dict]:
        rows = await self._fetch("SELECT name, value, changed_by, changed_at FROM "
                                 "service_settings")
        return {name: {"value": value, "changed_by": by, "changed_at": at}
                for name, value, by, at in rows}

    async def audit_log(self, call_id: str | None = None) -> list[dict]:
        if call_id is None:
            rows = await self._fetch("SELECT agent, call_id, action, at FROM audit ORDER BY id")
        else:
            rows = await self._fetch("SELECT agent, call_id, action, at FROM audit "
                                     "WHERE call_id = ? ORDER BY id", (call_id,))
        return [{"agent": a, "call_id": c, "action": x, "at": at} for a, c, x, at in rows]

    # -- callbacks (issue 13) ---------------------------------------------------------------

    _CALLBACK_COLUMNS = ("id, call_id, number, number_masked, joined_at, due_at, status, "
                         "created_at, updated_at")

    async def callback_create(self, callback: dict) -> None:
        cid, call_id, number, masked, joined, due, status = check_callback(callback)
        at = iso(now())
        async with self._transaction() as db:
            await db.execute(
                f"INSERT INTO callbacks ({self._CALLBACK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, call_id, number, masked, iso(joined), iso(due), status, at, at))

    async def callback_set(self, callback_id: str, status: str, due_at: str | None = None,
                           expect: str | None = None) -> bool:
        args = [check_status(status), iso(now())]
        sql = "UPDATE callbacks SET status = ?, updated_at = ?"
        if due_at is not None:
            sql += ", due_at = ?"
            args.append(canonical(due_at))
        sql += " WHERE id = ?"
        args.append(check_text(callback_id, "id"))
        if expect is not None:
            sql += " AND status = ?"
            args.append(check_status(expect))
        async with self._transaction() as db:
            cursor = await db.execute(sql, args)
            return cursor.rowcount > 0

    async def callback_attempt(self, callback_id: str, result: str, at: str) -> int:
        cid, result = check_text(callback_id, "id"), check_text(result, "result")
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "SELECT count(*) FROM callback_attempts WHERE callback_id = ?", (cid,))
            n = rows[0][0] + 1
            await db.execute("INSERT INTO callback_attempts (callback_id, n, at, result) "
                             "VALUES (?, ?, ?, ?)", (cid, n, canonical(at), result))
        return n

    async def _callbacks(self, where: str, args: tuple) -> list[dict]:
        rows = await self._fetch(
            f"SELECT {self._CALLBACK_COLUMNS} FROM callbacks WHERE {where} "
            "ORDER BY joined_at, created_at", args)
        attempts = await self._fetch(
            "SELECT callback_id, n, at, result FROM callback_attempts WHERE callback_id IN "
            f"(SELECT id FROM callbacks WHERE {where}) ORDER BY callback_id, n", args)
        return callbacks_out(rows, attempts)

    async def get_callback(self, callback_id: str) -> dict | None:
        found = await self._callbacks("id = ?", (callback_id,))
        return found[0] if found else None

    async def callbacks(self, call_id: str | None = None, status: str | None = None
                        ) -> list[dict]:
        where, args = ["1 = 1"], []
        if call_id is not None:
            where.append("call_id = ?")
            args.append(call_id)
        if status is not None:
            where.append("status = ?")
            args.append(check_status(status))
        return await self._callbacks(" AND ".join(where), tuple(args))

    async def callbacks_due(self, at: str, limit: int = 20) -> list[dict]:
        """Scheduled callbacks whose time has come, earliest join first."""
        return await self._callbacks(
            "id IN (SELECT id FROM callbacks WHERE status = 'scheduled' AND due_at <= ? "
            "ORDER BY joined_at LIMIT ?)", (canonical(at), int(limit)))

    async def callbacks_board(self, since_at: str, limit: int = BOARD_LIMIT) -> list[dict]:
        """Callbacks still to be made (scheduled, queued) and those ended since
        ``since_at``: the desk's queue board."""
        return await self._callbacks(
            f"id IN (SELECT id FROM callbacks WHERE status IN ('scheduled', 'queued') "
            f"OR updated_at >= ? {BOARD_ORDER} LIMIT ?)", (canonical(since_at), int(limit)))

    async def queue_stats(self, since_at: str) -> dict:
        rows = await self._fetch(
            "SELECT joined_at, answered_at, left_at FROM queue_calls "
            "WHERE result = 'answered' AND answered_at >= ? ORDER BY answered_at DESC LIMIT ?",
            (canonical(since_at), STATS_LIMIT))
        return stats_out(rows)

    async def queue_ahead(self, joined_at: str, at: str, since_at: str) -> int:
        """Callers still waiting who first joined before ``joined_at`` (and after
        ``since_at``), and callbacks waiting their turn that were made before it."""
        joined, at, since_at = canonical(joined_at), canonical(at), canonical(since_at)
        # SQLite's ?NNN parameters are numbered like PostgreSQL's $NNN.
        rows = await self._fetch(_AHEAD.replace("$", "?"), (joined, since_at, at))
        return rows[0][0]
