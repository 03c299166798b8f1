"""Lockout after repeated failed verifications, kept in the embedded store (SQLite).

Only salted hashes (HMAC-SHA256) of identifiers and caller numbers are stored. The salt
comes from configuration, or is made once and kept in the store itself.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from pathlib import Path

import aiosqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (subject TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_subject_at ON failures (subject, at);
"""

# Caller ids that identify nobody: they are never counted or locked.
_ANONYMOUS = {"", "unknown", "anonymous", "private", "restricted"}


class LockoutStore:
    def __init__(self, path: str, *, identifier_limit: int, caller_limit: int,
                 window_hours: float, salt: str = "", clock=time.time) -> None:
        self.path = path
        self.identifier_limit = identifier_limit
        self.caller_limit = caller_limit
        self.window = window_hours * 3600
        self._salt = salt.encode()
        self._clock = clock
        self._db: aiosqlite.Connection | None = None
        self._write = asyncio.Lock()
        self._mac = None

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        # WAL: readers never wait for a writer, and several worker processes (ivr serve
        # --workers) share the file; NORMAL: a commit is not an fsync (a power cut may lose
        # the last failures counted, never corrupt the store).
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        if not self._salt:
            rows = await self._db.execute_fetchall("SELECT value FROM meta WHERE key = 'salt'")
            if not rows:
                rows = [(secrets.token_hex(32),)]
                await self._db.execute("INSERT INTO meta VALUES ('salt', ?)", rows[0])
            self._salt = rows[0][0].encode()
        await self._db.commit()
        self._mac = hmac.new(self._salt, digestmod=hashlib.sha256)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _subjects(self, identifier: str, caller: str) -> list[tuple[str, int]]:
        subjects = [(self._hash("id", identifier), self.identifier_limit)]
        if caller.lower() not in _ANONYMOUS:
            subjects.append((self._hash("caller", caller), self.caller_limit))
        return subjects

    def _hash(self, kind: str, value: str) -> str:
        mac = self._mac.copy()   # the salt's key schedule is done once, in open()
        mac.update(f"{kind}:{value}".encode())
        return mac.hexdigest()

    def pseudonym(self, card_number: str) -> str:
        """A participant's stable pseudonym under the store's salt: call records carry it
        so that agents see a verified participant's earlier contacts, never the number."""
        return self._hash("participant", card_number)

    async def is_locked(self, identifier: str, caller: str) -> bool:
        subjects = dict(self._subjects(identifier, caller))
        marks = ",".join("?" * len(subjects))
        # One statement, fetched whole: no cursor stays open while other calls use the
        # connection (interleaved cursors on one connection fail under load).
        rows = await self._db.execute_fetchall(
            f"SELECT subject, COUNT(*) FROM failures WHERE subject IN ({marks}) AND at > ? "
            "GROUP BY subject", (*subjects, self._clock() - self.window))
        return any(count >= subjects[subject] for subject, count in rows)

    async def record_failure(self, identifier: str, caller: str) -> None:
        now = self._clock()
        async with self._write:
            await self._db.executemany(
                "INSERT INTO failures VALUES (?, ?)",
                [(subject, now) for subject, _ in self._subjects(identifier, caller)])
            await self._db.execute("DELETE FROM failures WHERE at <= ?", (now - self.window,))
            await self._db.commit()
