"""Opening an SQLite file that several processes share in WAL mode (the desk's store, the
lockout counts of ``ivr serve --workers``): when two open a new file at once, switching
it to WAL can fail with "database is locked" without waiting on the busy timeout (about
one open in a thousand did here); the open tries again until the busy timeout is spent."""
from __future__ import annotations

import asyncio
import sqlite3

import aiosqlite

RETRY_SECONDS = 0.05


async def open_wal(path: str, schema: str, *, busy_ms: int = 5000,
                   isolation_level: str | None = "") -> aiosqlite.Connection:
    """A connection to ``path`` in WAL mode with ``schema`` applied (CREATE ... IF NOT
    EXISTS). Raises sqlite3.Error (or OSError) when it cannot be had."""
    db = await aiosqlite.connect(path, isolation_level=isolation_level)
    deadline = asyncio.get_running_loop().time() + busy_ms / 1000
    while True:
        try:
            await db.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            await db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit is not an fsync; a power cut may lose the last commits,
            # never corrupt the file.
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.executescript(schema)
            return db
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(RETRY_SECONDS)
                continue
            await db.close()
            raise
        except BaseException:
            await db.close()
            raise
