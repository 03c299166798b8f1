"""Login sessions, kept on the server: a random token in the cookie, nothing else.

The table holds the SHA-256 of each token (a leaked table or a timing probe does not give
a usable cookie) with the agent and the expiry time, a fixed lifetime from login.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Callable

TOKEN_BYTES = 32
MAX_SESSIONS = 10_000


@dataclass
class Session:
    agent_id: str
    expires_at: float


class Sessions:
    def __init__(self, lifetime: float = 12 * 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._table: dict[str, Session] = {}

    def create(self, agent_id: str) -> str:
        """A new session for the agent; returns the cookie's token."""
        if len(self._table) >= MAX_SESSIONS:
            self.sweep()
            while len(self._table) >= MAX_SESSIONS:      # the oldest logins go first
                del self._table[next(iter(self._table))]
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self._table[_key(token)] = Session(agent_id, self._clock() + self.lifetime)
        return token

    def get(self, token: str | None) -> Session | None:
        """The live session of a cookie's token, or None (unknown, malformed, expired)."""
        if not token or len(token) > 128:
            return None
        session = self._table.get(_key(token))
        if session is None or session.expires_at <= self._clock():
            return None             # an expired one stays until sweep() reports its agent
        return session

    def end(self, token: str | None) -> Session | None:
        if not token or len(token) > 128:
            return None
        return self._table.pop(_key(token), None)

    def end_agent(self, agent_id: str) -> None:
        for key in [k for k, s in self._table.items() if s.agent_id == agent_id]:
            del self._table[key]

    def sweep(self) -> set[str]:
        """Drops expired sessions; returns the agents left with no live session."""
        now = self._clock()
        expired = {k: s for k, s in self._table.items() if s.expires_at <= now}
        for key in expired:
            del self._table[key]
        return {s.agent_id for s in expired.values()} - {
            s.agent_id for s in self._table.values()}


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
