"""The agent desk's store: call records, queue history, wrap-ups, the audit trail and the
record forwarder's offsets, behind one interface with two engines.

SQLite (``ivr.store.sqlite``, the default: one file, embedded) or PostgreSQL
(``ivr.store.postgres``: several IVR servers and desks), chosen by ``open_store``. The
store holds no raw identifier except ``card``, which only the desk writes, for verified
calls; everything in a call record is masked already (``ivr.records``).
"""
from __future__ import annotations

from typing import Protocol

from ..config import Settings


class StoreUnavailable(Exception):
    """The engine is unreachable or the connection broke: try again later."""


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def put_records(self, records: list[dict], source: str, offset: int) -> None: ...
    async def forwarded_offset(self, source: str) -> int: ...
    async def get_record(self, call_id: str) -> dict | None: ...
    async def set_card(self, call_id: str, card: str) -> None: ...
    async def queue_joined(self, call_id: str, at: str, kind: str = "caller") -> None: ...
    async def queue_answered(self, call_id: str, agent: str, at: str) -> None: ...
    async def queue_left(self, call_id: str, result: str, at: str) -> None: ...
    async def get_queue(self, call_id: str) -> dict | None: ...
    async def put_wrapup(self, call_id: str, agent: str, disposition: str, note: str
                         ) -> dict: ...
    async def get_wrapup(self, call_id: str) -> dict | None: ...
    async def history(self, participant_ref: str, exclude_call_id: str, days: int = 30
                      ) -> list[dict]: ...
    async def audit(self, agent: str, call_id: str, action: str) -> None: ...
    async def audit_log(self, call_id: str | None = None) -> list[dict]: ...


def open_store(settings: Settings) -> Store:
    """The configured engine, not yet connected (``await store.open()``)."""
    url = settings.store_url
    if not url:
        from .sqlite import SqliteStore
        return SqliteStore(settings.store_db)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore
        return PostgresStore(url)
    # The URL may hold a password: name only its scheme.
    raise ValueError(f"IVR_STORE_URL: unsupported scheme {url.split(':', 1)[0]!r} "
                     "(expected postgresql://)")
