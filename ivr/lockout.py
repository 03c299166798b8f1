"""Lockout after repeated failed verifications (spec hotline.md v1.3, step 5).

What counts, and against what (each a *subject* with its own threshold and window):
- the identifier typed (card number or NIK); when the participant was found, the failure
  counts for both their card number and their NIK, so switching between them gains nothing;
- the caller's number, when it is a usable one;
- callers without a usable number (withheld, ``anonymous``, ``unknown``, anything that is
  not a phone number) share one subject among them, with its own threshold and window:
  withholding the number is no way around the limit.

Only salted hashes (HMAC-SHA256) of identifiers and caller numbers are stored. The salt
comes from configuration, or is made once and kept in the store itself (so that every
server sharing the store shares it).

Two stores keep the counts: SQLite (the embedded default; ``ivr serve --workers`` share
its file) and Redis (``IVR_LOCKOUT_REDIS_URL``), which every IVR server of a site shares.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import aiosqlite

from .sqlite_wal import open_wal

# A usable caller number: digits, optionally after "+", long enough to be a phone's.
_USABLE_CALLER = re.compile(r"\+?\d{5,20}")
ANONYMOUS = "anonymous"


class LockoutUnavailable(Exception):
    """The store could not be read or written: the caller cannot be checked, so the call
    goes to an agent (self-service never runs unchecked)."""


@dataclass(frozen=True, slots=True)
class Subject:
    key: str          # the salted hash, or the shared key of anonymous callers
    limit: int
    window: float     # seconds


def usable_caller(caller: str) -> str | None:
    """The caller number in one form (``+62`` → ``0``), or None when it identifies nobody."""
    caller = caller.strip().replace(" ", "").replace("-", "")
    if not _USABLE_CALLER.fullmatch(caller):
        return None
    return "0" + caller[3:] if caller.startswith("+62") else caller.lstrip("+")


class Lockout:
    """The counting rules and the hashing; a subclass keeps the counts."""

    def __init__(self, *, identifier_limit: int, caller_limit: int, window_hours: float,
                 anonymous_limit: int = 50, anonymous_window_hours: float = 1.0,
                 salt: str = "", clock=time.time) -> None:
        self.identifier_limit = identifier_limit
        self.caller_limit = caller_limit
        self.window = window_hours * 3600
        self.anonymous_limit = anonymous_limit
        self.anonymous_window = anonymous_window_hours * 3600
        self._salt = salt.encode()
        self._clock = clock
        self._mac = None

    def _keyed(self, salt: bytes) -> None:
        self._mac = hmac.new(salt, digestmod=hashlib.sha256)   # key schedule done once

    def _hash(self, kind: str, value: str) -> str:
        mac = self._mac.copy()
        mac.update(f"{kind}:{value}".encode())
        return mac.hexdigest()

    def pseudonym(self, card_number: str) -> str:
        """A participant's stable pseudonym under the store's salt: call records carry it
        so that agents see a verified participant's earlier contacts, never the number."""
        return self._hash("participant", card_number)

    def _identifier(self, identifier: str) -> Subject:
        return Subject(self._hash("id", identifier), self.identifier_limit, self.window)

    def _caller(self, caller: str) -> Subject:
        number = usable_caller(caller)
        if number is None:
            return Subject(ANONYMOUS, self.anonymous_limit, self.anonymous_window)
        return Subject(self._hash("caller", number), self.caller_limit, self.window)

    async def is_locked(self, identifier: str, caller: str) -> bool:
        subjects = [self._identifier(identifier), self._caller(caller)]
        try:
            counts = await self._counts(subjects, self._clock())
        except Exception as exc:    # the store's own errors (Redis, SQLite, the network)
            raise LockoutUnavailable(f"cannot read the lockout store ({type(exc).__name__})"
                                     ) from None
        return any(count >= s.limit for s, count in zip(subjects, counts))

    async def record_failure(self, identifier: str, caller: str,
                             participant_ids: Iterable[str] = ()) -> None:
        """One failed verification. ``participant_ids``: the card number and NIK of the
        participant found under ``identifier`` (empty when none was)."""
        identifiers = dict.fromkeys([identifier, *participant_ids])
        subjects = [self._identifier(i) for i in identifiers] + [self._caller(caller)]
        try:
            await self._add(subjects, self._clock())
        except Exception as exc:
            raise LockoutUnavailable(f"cannot write the lockout store ({type(exc).__name__})"
                                     ) from None

    async def failures(self, identifier: str) -> int:
        """Failures counted for an identifier within the window (for tests and operators)."""
        return (await self._counts([self._identifier(identifier)], self._clock()))[0]

    async def _counts(self, subjects: list[Subject], now: float) -> list[int]:
        raise NotImplementedError

    async def _add(self, subjects: list[Subject], now: float) -> None:
        raise NotImplementedError


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (subject TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_subject_at ON failures (subject, at);
"""


class LockoutStore(Lockout):
    """The counts in SQLite: the embedded default."""

    def __init__(self, path: str, **rules) -> None:
        super().__init__(**rules)
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._write = asyncio.Lock()

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # WAL: readers never wait for a writer, and several worker processes (ivr serve
        # --workers) share the file.
        self._db = await open_wal(self.path, _SCHEMA)
        if not self._salt:
            rows = await self._db.execute_fetchall("SELECT value FROM meta WHERE key = 'salt'")
            if not rows:
                rows = [(secrets.token_hex(32),)]
                await self._db.execute("INSERT INTO meta VALUES ('salt', ?)", rows[0])
            self._salt = rows[0][0].encode()
        await self._db.commit()
        self._keyed(self._salt)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _counts(self, subjects: list[Subject], now: float) -> list[int]:
        # One statement, fetched whole: no cursor stays open while other calls use the
        # connection (interleaved cursors on one connection fail under load).
        query = " UNION ALL ".join(
            ["SELECT COUNT(*) FROM failures WHERE subject = ? AND at > ?"] * len(subjects))
        rows = await self._db.execute_fetchall(
            query, [v for s in subjects for v in (s.key, now - s.window)])
        return [row[0] for row in rows]

    async def _add(self, subjects: list[Subject], now: float) -> None:
        oldest = now - max(self.window, self.anonymous_window)
        async with self._write:
            await self._db.executemany("INSERT INTO failures VALUES (?, ?)",
                                       [(s.key, now) for s in subjects])
            await self._db.execute("DELETE FROM failures WHERE at <= ?", (oldest,))
            await self._db.commit()


REDIS_CONNECTIONS = 64
REDIS_SECONDS = 2.0


class RedisLockoutStore(Lockout):
    """The counts in Redis, shared by every IVR server: one sorted set per subject (a
    member per failure, scored by its time), trimmed to its window and expiring with it."""

    PREFIX = "ivr:lockout:"

    def __init__(self, url: str, **rules) -> None:
        super().__init__(**rules)
        self.url = url
        self._redis = None

    async def open(self) -> None:
        import redis.asyncio as aioredis
        # A bounded pool: at the peak, commands wait for a free connection (up to the
        # timeout) instead of opening one per call.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_SECONDS,
            socket_connect_timeout=REDIS_SECONDS, socket_timeout=REDIS_SECONDS)
        self._redis = aioredis.Redis.from_pool(pool)
        if not self._salt:
            # The first server to start makes it; every other one reads the same.
            await self._redis.set(self.PREFIX + "salt", secrets.token_hex(32), nx=True)
            self._salt = await self._redis.get(self.PREFIX + "salt")
        self._keyed(self._salt)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _counts(self, subjects: list[Subject], now: float) -> list[int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for s in subjects:
                pipe.zcount(self.PREFIX + s.key, f"({now - s.window}", "+inf")
            return await pipe.execute()

    async def _add(self, subjects: list[Subject], now: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for s in subjects:
                key = self.PREFIX + s.key
                pipe.zadd(key, {f"{now:.6f}:{secrets.token_hex(6)}": now})
                pipe.zremrangebyscore(key, "-inf", now - s.window)
                pipe.expire(key, int(s.window) + 1)
            await pipe.execute()


def lockout_store(settings) -> Lockout:
    """The store ``settings`` ask for (Redis when a URL is configured, else SQLite)."""
    rules = dict(identifier_limit=settings.lockout_identifier_failures,
                 caller_limit=settings.lockout_caller_failures,
                 window_hours=settings.lockout_window_hours,
                 anonymous_limit=settings.lockout_anonymous_failures,
                 anonymous_window_hours=settings.lockout_anonymous_window_hours,
                 salt=settings.lockout_salt)
    if settings.lockout_redis_url:
        return RedisLockoutStore(settings.lockout_redis_url, **rules)
    return LockoutStore(settings.state_db, **rules)
