"""Lockout after repeated failed verifications, kept in the embedded store (SQLite).

Only salted hashes (HMAC-SHA256) of identifiers and caller numbers are stored. The salt
comes from configuration, or is made once and kept in the store itself.
"""
from __future__ import annotations

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

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.executescript(_SCHEMA)
        if not self._salt:
            async with self._db.execute("SELECT value FROM meta WHERE key = 'salt'") as cur:
                row = await cur.fetchone()
            if row is None:
                row = (secrets.token_hex(32),)
                await self._db.execute("INSERT INTO meta VALUES ('salt', ?)", row)
            self._salt = row[0].encode()
        await self._db.commit()

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
        return hmac.new(self._salt, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    async def is_locked(self, identifier: str, caller: str) -> bool:
        since = self._clock() - self.window
        for subject, limit in self._subjects(identifier, caller):
            async with self._db.execute(
                    "SELECT COUNT(*) FROM failures WHERE subject = ? AND at > ?",
                    (subject, since)) as cur:
                (count,) = await cur.fetchone()
            if count >= limit:
                return True
        return False

    async def record_failure(self, identifier: str, caller: str) -> None:
        now = self._clock()
        await self._db.executemany(
            "INSERT INTO failures VALUES (?, ?)",
            [(subject, now) for subject, _ in self._subjects(identifier, caller)])
        await self._db.execute("DELETE FROM failures WHERE at <= ?", (now - self.window,))
        await self._db.commit()
