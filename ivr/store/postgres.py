"""The store in PostgreSQL (asyncpg), for several IVR servers and desks.

A small pool; when the server goes away the pool's connections break and the next use
raises ``StoreUnavailable``, and once it is back the pool connects again by itself. Same
tables and meaning as ``ivr.store.sqlite``, with times as ``timestamptz``.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import asyncpg

from . import StoreUnavailable
from .rows import (BOARD_LIMIT, BOARD_ORDER, HISTORY_LIMIT, MAX_TEXT, QUEUE_RESULTS,
                   SERVICE_AUDIT, STATS_LIMIT, callbacks_out, check_callback, check_card,
                   check_status, check_text, iso, now, parse_time, queue_out, record_out,
                   record_row, since, stats_out)

POOL_SIZE = 4
CONNECT_SECONDS = 5.0
COMMAND_SECONDS = 10.0
_SCHEMA_LOCK = 0x1500400      # advisory lock: two processes creating the schema at once

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id text PRIMARY KEY,
    started_at timestamptz, ended_at timestamptz, participant_ref text, outcome text,
    transfer_reason text, verified boolean,
    record jsonb,           -- the whole call record; NULL until it arrives
    card text               -- the verified card number, set by the desk only
);
CREATE INDEX IF NOT EXISTS calls_participant ON calls (participant_ref, started_at);
CREATE TABLE IF NOT EXISTS queue_calls (
    call_id text PRIMARY KEY, kind text, joined_at timestamptz, answered_at timestamptz,
    answered_by text, left_at timestamptz, result text
);
CREATE TABLE IF NOT EXISTS wrapups (
    call_id text PRIMARY KEY, agent text NOT NULL, disposition text NOT NULL,
    note text NOT NULL, at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id bigserial PRIMARY KEY, agent text NOT NULL, call_id text NOT NULL,
    action text NOT NULL, at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_call ON audit (call_id, id);
CREATE TABLE IF NOT EXISTS callbacks (
    id text PRIMARY KEY, call_id text NOT NULL,
    number text NOT NULL,   -- in clear: the trunk dials it; never logged, never on the desk
    number_masked text NOT NULL, joined_at timestamptz NOT NULL, due_at timestamptz NOT NULL,
    status text NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (status, due_at);
CREATE TABLE IF NOT EXISTS callback_attempts (
    callback_id text NOT NULL, n integer NOT NULL, at timestamptz NOT NULL,
    result text NOT NULL, PRIMARY KEY (callback_id, n)
);
CREATE TABLE IF NOT EXISTS forwarder_offsets (
    source text PRIMARY KEY, position bigint NOT NULL, at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS service_settings (
    name text PRIMARY KEY, value text NOT NULL, changed_by text NOT NULL,
    changed_at timestamptz NOT NULL
);
"""

_PUT_RECORD = """
INSERT INTO calls (call_id, started_at, ended_at, participant_ref, outcome, transfer_reason,
                   verified, record)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
ON CONFLICT (call_id) DO UPDATE SET
    started_at = excluded.started_at, ended_at = excluded.ended_at,
    participant_ref = excluded.participant_ref, outcome = excluded.outcome,
    transfer_reason = excluded.transfer_reason, verified = excluded.verified,
    record = excluded.record
"""

# As in ivr.store.sqlite: a join after the last queue episode ended starts a new one.
_NEW_EPISODE = "queue_calls.result IS NOT NULL AND queue_calls.left_at < excluded.joined_at"
_JOIN = f"""
INSERT INTO queue_calls (call_id, kind, joined_at) VALUES ($1, $2, $3)
ON CONFLICT (call_id) DO UPDATE SET
    kind = excluded.kind,
    joined_at = CASE WHEN {_NEW_EPISODE} THEN excluded.joined_at
                     ELSE coalesce(queue_calls.joined_at, excluded.joined_at) END,
    answered_at = CASE WHEN {_NEW_EPISODE} THEN NULL ELSE queue_calls.answered_at END,
    answered_by = CASE WHEN {_NEW_EPISODE} THEN NULL ELSE queue_calls.answered_by END,
    left_at = CASE WHEN {_NEW_EPISODE} THEN NULL ELSE queue_calls.left_at END,
    result = CASE WHEN {_NEW_EPISODE} THEN NULL ELSE queue_calls.result END
"""

# As in ivr.store.sqlite: who is ahead of a first join.
_AHEAD = """
SELECT (SELECT count(*) FROM queue_calls
        WHERE result IS NULL AND answered_at IS NULL AND joined_at < $1 AND joined_at >= $2
          AND call_id NOT IN (SELECT call_id FROM callbacks
                              WHERE status IN ('scheduled', 'queued')))
     + (SELECT count(*) FROM callbacks c LEFT JOIN queue_calls q ON q.call_id = c.call_id
        WHERE c.status IN ('scheduled', 'queued') AND c.due_at <= $3 AND c.joined_at < $1
          AND (q.answered_at IS NULL OR q.answered_at < c.updated_at))
"""

# What "the server is not there (now)" looks like through asyncpg.
_UNAVAILABLE = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError,
                asyncpg.exceptions.InsufficientResourcesError)


class PostgresStore:
    def __init__(self, url: str) -> None:
        self._url = url           # may hold a password: never logged
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:     # the forwarder and its owner may both open it
            if self._pool is None:
                await self._open()

    async def _open(self) -> None:
        try:
            pool = await asyncpg.create_pool(self._url, min_size=1, max_size=POOL_SIZE,
                                             timeout=CONNECT_SECONDS,
                                             command_timeout=COMMAND_SECONDS)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {type(exc).__name__}") from exc
        try:
            async with self._guard(pool) as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await conn.execute(_SCHEMA)
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), CONNECT_SECONDS)
            except (asyncio.TimeoutError, *_UNAVAILABLE):
                pool.terminate()

    @contextlib.asynccontextmanager
    async def _guard(self, pool: asyncpg.Pool | None = None
                     ) -> AsyncIterator[asyncpg.Connection]:
        pool = pool or self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        try:
            async with pool.acquire(timeout=CONNECT_SECONDS) as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._guard() as conn, conn.transaction():
            yield conn

    async def _fetch(self, sql: str, *args) -> list:
        async with self._guard() as conn:
            return await conn.fetch(sql, *args)

    # -- call records ---------------------------------------------------------------------

    async def put_records(self, records: list[dict], source: str, offset: int) -> None:
        check_text(source, "source", MAX_TEXT)
        rows = {}
        for record in records:                 # the last of one call id wins, as in a file
            row = record_row(record)
            rows[row.call_id] = (row.call_id, row.started_at, row.ended_at,
                                 row.participant_ref, row.outcome, row.transfer_reason,
                                 row.verified, row.body)
        async with self._transaction() as conn:
            if rows:
                await conn.executemany(_PUT_RECORD, list(rows.values()))
            await conn.execute(
                "INSERT INTO forwarder_offsets (source, position, at) VALUES ($1, $2, now()) "
                "ON CONFLICT (source) DO UPDATE SET position = excluded.position, at = now()",
                source, int(offset))

    async def forwarded_offset(self, source: str) -> int:
        rows = await self._fetch("SELECT position FROM forwarder_offsets WHERE source = $1",
                                 source)
        return rows[0][0] if rows else 0

    async def get_record(self, call_id: str) -> dict | None:
        rows = await self._fetch("SELECT record, card FROM calls WHERE call_id = $1", call_id)
        if not rows or rows[0][0] is None:
            return None
        return record_out(rows[0][0], rows[0][1])

    async def set_card(self, call_id: str, card: str) -> None:
        args = (check_text(call_id, "call_id"), check_card(card))
        async with self._transaction() as conn:
            await conn.execute("INSERT INTO calls (call_id, card) VALUES ($1, $2) "
                               "ON CONFLICT (call_id) DO UPDATE SET card = excluded.card", *args)

    # -- queue history ----------------------------------------------------------------------

    async def queue_joined(self, call_id: str, at: str, kind: str = "caller") -> None:
        args = (check_text(call_id, "call_id"), check_text(kind, "kind"), parse_time(at))
        async with self._transaction() as conn:
            await conn.execute(_JOIN, *args)

    async def queue_answered(self, call_id: str, agent: str, at: str) -> None:
        args = (check_text(call_id, "call_id"), parse_time(at), check_text(agent, "agent"))
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO queue_calls (call_id, answered_at, answered_by) VALUES ($1, $2, $3) "
                "ON CONFLICT (call_id) DO UPDATE SET answered_at = excluded.answered_at, "
                "answered_by = excluded.answered_by", *args)

    async def queue_left(self, call_id: str, result: str, at: str) -> None:
        if result not in QUEUE_RESULTS:
            raise ValueError("invalid queue result")
        args = (check_text(call_id, "call_id"), parse_time(at), result)
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO queue_calls (call_id, left_at, result) VALUES ($1, $2, $3) "
                "ON CONFLICT (call_id) DO UPDATE SET left_at = excluded.left_at, "
                "result = excluded.result", *args)

    async def get_queue(self, call_id: str) -> dict | None:
        rows = await self._fetch(
            "SELECT joined_at, answered_at, left_at, answered_by, result FROM queue_calls "
            "WHERE call_id = $1", call_id)
        return queue_out(*rows[0]) if rows else None

    # -- wrap-ups, history, audit -----------------------------------------------------------

    async def put_wrapup(self, call_id: str, agent: str, disposition: str, note: str) -> dict:
        at = now()
        wrapup = {"agent": check_text(agent, "agent"),
                  "disposition": check_text(disposition, "disposition"),
                  "note": check_text(note, "note", MAX_TEXT, empty=True), "at": iso(at)}
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO wrapups (call_id, agent, disposition, note, at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_id) DO UPDATE SET "
                "agent = excluded.agent, disposition = excluded.disposition, "
                "note = excluded.note, at = excluded.at",
                check_text(call_id, "call_id"), wrapup["agent"], wrapup["disposition"],
                wrapup["note"], at)
        return wrapup

    async def get_wrapup(self, call_id: str) -> dict | None:
        rows = await self._fetch(
            "SELECT agent, disposition, note, at FROM wrapups WHERE call_id = $1", call_id)
        if not rows:
            return None
        agent, disposition, note, at = rows[0]
        return {"agent": agent, "disposition": disposition, "note": note, "at": iso(at)}

    async def history(self, participant_ref: str, exclude_call_id: str, days: int = 30
                      ) -> list[dict]:
        rows = await self._fetch(
            "SELECT c.call_id, c.started_at, c.outcome, c.transfer_reason, w.disposition "
            "FROM calls c LEFT JOIN wrapups w ON w.call_id = c.call_id "
            "WHERE c.participant_ref = $1 AND c.call_id <> $2 AND c.started_at >= $3 "
            "ORDER BY c.started_at DESC LIMIT $4",
            participant_ref, exclude_call_id, since(days), HISTORY_LIMIT)
        return [{"call_id": call_id, "started_at": iso(started), "outcome": outcome,
                 "transfer_reason": reason, "disposition": disposition}
                for call_id, started, outcome, reason, disposition in rows]

    async def audit(self, agent: str, call_id: str, action: str) -> None:
        args = (check_text(agent, "agent"), check_text(call_id, "call_id"),
                check_text(action, "action", MAX_TEXT), now())
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO audit (agent, call_id, action, at) VALUES ($1, $2, $3, $4)", *args)

    async def set_service_setting(self, name: str, value: str, by: str) -> None:
        args = (check_text(name, "name"), check_text(value, "value", MAX_TEXT, empty=True),
                check_text(by, "changed_by"), now())
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO service_settings (name, value, changed_by, changed_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET value = "
                "excluded.value, changed_by = excluded.changed_by, "
                "changed_at = excluded.changed_at", *args)
            await conn.execute(
                "INSERT INTO audit (agent, call_id, action, at) VALUES ($1, $2, $3, $4)",
                args[2], SERVICE_AUDIT, f"{args[0]}={args[1]}", args[3])

    async def service_settings(self) -> dict[str, dict]:
        rows = await self._fetch("SELECT name, value, changed_by, changed_at FROM "
                                 "service_settings")
        return {name: {"value": value, "changed_by": by, "changed_at": iso(at)}
                for name, value, by, at in rows}

    async def audit_log(self, call_id: str | None = None) -> list[dict]:
        if call_id is None:
            rows = await self._fetch("SELECT agent, call_id, action, at FROM audit ORDER BY id")
        else:
            rows = await self._fetch("SELECT agent, call_id, action, at FROM audit "
                                     "WHERE call_id = $1 ORDER BY id", call_id)
        return [{"agent": a, "call_id": c, "action": x, "at": iso(at)} for a, c, x, at in rows]

    # -- callbacks (issue 13) ---------------------------------------------------------------

    _CALLBACK_COLUMNS = ("id, call_id, number, number_masked, joined_at, due_at, status, "
                         "created_at, updated_at")

    async def callback_create(self, callback: dict) -> None:
        args = check_callback(callback)
        at = now()
        async with self._transaction() as conn:
            await conn.execute(
                f"INSERT INTO callbacks ({self._CALLBACK_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", *args, at, at)

    async def callback_set(self, callback_id: str, status: str, due_at: str | None = None,
                           expect: str | None = None) -> bool:
        args = [check_status(status), now(), check_text(callback_id, "id")]
        sql = "UPDATE callbacks SET status = $1, updated_at = $2"
        where = " WHERE id = $3"
        if due_at is not None:
            args.append(parse_time(due_at))
            sql += f", due_at = ${len(args)}"
        if expect is not None:
            args.append(check_status(expect))
            where += f" AND status = ${len(args)}"
        async with self._transaction() as conn:
            done = await conn.execute(sql + where, *args)
        return done != "UPDATE 0"

    async def callback_attempt(self, callback_id: str, result: str, at: str) -> int:
        cid, result = check_text(callback_id, "id"), check_text(result, "result")
        async with self._transaction() as conn:
            # The row lock orders two attempts of one callback recorded at once.
            await conn.execute("SELECT 1 FROM callbacks WHERE id = $1 FOR UPDATE", cid)
            n = await conn.fetchval(
                "SELECT count(*) FROM callback_attempts WHERE callback_id = $1", cid) + 1
            await conn.execute("INSERT INTO callback_attempts (callback_id, n, at, result) "
                               "VALUES ($1, $2, $3, $4)", cid, n, parse_time(at), result)
        return n

    async def _callbacks(self, where: str, *args) -> list[dict]:
        rows = await self._fetch(
            f"SELECT {self._CALLBACK_COLUMNS} FROM callbacks WHERE {where} "
            "ORDER BY joined_at, created_at", *args)
        attempts = await self._fetch(
            "SELECT callback_id, n, at, result FROM callback_attempts WHERE callback_id IN "
            f"(SELECT id FROM callbacks WHERE {where}) ORDER BY callback_id, n", *args)
        return callbacks_out([tuple(r) for r in rows], [tuple(a) for a in attempts])

    async def get_callback(self, callback_id: str) -> dict | None:
        found = await self._callbacks("id = $1", callback_id)
        return found[0] if found else None

    async def callbacks(self, call_id: str | None = None, status: str | None = None
                        ) -> list[dict]:
        where, args = ["true"], []
        if call_id is not None:
            args.append(call_id)
            where.append(f"call_id = ${len(args)}")
        if status is not None:
            args.append(check_status(status))
            where.append(f"status = ${len(args)}")
        return await self._callbacks(" AND ".join(where), *args)

    async def callbacks_due(self, at: str, limit: int = 20) -> list[dict]:
        """Scheduled callbacks whose time has come, earliest join first."""
        return await self._callbacks(
            "id IN (SELECT id FROM callbacks WHERE status = 'scheduled' AND due_at <= $1 "
            "ORDER BY joined_at LIMIT $2)", parse_time(at), int(limit))

    async def callbacks_board(self, since_at: str, limit: int = BOARD_LIMIT) -> list[dict]:
        """Callbacks still to be made (scheduled, queued) and those ended since
        ``since_at``: the desk's queue board."""
        return await self._callbacks(
            f"id IN (SELECT id FROM callbacks WHERE status IN ('scheduled', 'queued') "
            f"OR updated_at >= $1 {BOARD_ORDER} LIMIT $2)", parse_time(since_at), int(limit))

    async def queue_stats(self, since_at: str) -> dict:
        rows = await self._fetch(
            "SELECT joined_at, answered_at, left_at FROM queue_calls "
            "WHERE result = 'answered' AND answered_at >= $1 ORDER BY answered_at DESC "
            "LIMIT $2", parse_time(since_at), STATS_LIMIT)
        return stats_out([tuple(r) for r in rows])

    async def queue_ahead(self, joined_at: str, at: str, since_at: str) -> int:
        """Callers still waiting who first joined before ``joined_at`` (and after
        ``since_at``), and callbacks waiting their turn that were made before it."""
        rows = await self._fetch(_AHEAD, parse_time(joined_at), parse_time(since_at),
                                 parse_time(at))
        return rows[0][0]
