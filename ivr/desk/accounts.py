"""Agents' accounts: who may log in to the desk, with which password, throttled.

The accounts file (``IVR_DESK_AGENTS``) is TOML, one ``[[agent]]`` table per agent::

    [[agent]]
    id = "agent1"                 # also the queue member name in Asterisk
    name = "Siti Rahayu"
    interface = "PJSIP/agent1"
    password_hash = "scrypt$16384$8$1$...$..."     # python -m ivr.desk.accounts

Passwords are kept only as salted ``hashlib.scrypt`` hashes, checked in a worker thread
(about 50 ms of CPU each, which must not stall the event loop). Failed logins are counted
per user name and per client address within a window; past the limit every attempt, even
with the right password, is refused with the time to wait.
"""
from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import hmac
import re
import secrets
import sys
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

# Agent ids and interfaces go into AMI headers: a strict pattern keeps newlines and other
# header-breaking characters out by construction.
AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
INTERFACE = re.compile(r"[A-Za-z]+/[A-Za-z0-9_.@-]{1,64}(/n)?")   # Local/x@ctx/n too
MIN_PASSWORD = 8
MAX_PASSWORD = 256          # longer input is refused before it reaches scrypt

_N, _R, _P, _DKLEN = 2 ** 14, 8, 1, 32     # ~16 MiB and ~50 ms per hash
_MAX_N = 2 ** 20


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64): the form kept in the accounts file."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN,
                            maxmem=_maxmem(n, r))
    return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    """CPU-heavy: call from a worker thread. False for any malformed stored hash."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        n_, r_, p_ = int(n), int(r), int(p)
        if scheme != "scrypt" or not (2 <= n_ <= _MAX_N and 1 <= r_ <= 32 and 1 <= p_ <= 16):
            return False
        salt_b, expected_b = _unb64(salt), _unb64(expected)
        digest = hashlib.scrypt(password.encode(), salt=salt_b, n=n_, r=r_, p=p_,
                                dklen=len(expected_b), maxmem=_maxmem(n_, r_))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected_b)


def _maxmem(n: int, r: int) -> int:
    return 128 * n * r * 2 + 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    interface: str
    password_hash: str = field(repr=False)


class LoginThrottled(Exception):
    """Too many failed logins for this user name or address; ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class LoginThrottle:
    """Attempts per key (``user:<name>``, ``addr:<address>``) within a sliding window.

    An attempt counts before its password is checked, so concurrent guesses cannot slip
    past the limit; a successful login takes its own attempt back and clears the user's.
    """

    def __init__(self, per_user: int = 5, per_address: int = 20, window: float = 900.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self.per_user, self.per_address, self.window = per_user, per_address, window
        self._clock = clock
        self._max_keys = max_keys
        self._attempts: dict[str, deque[float]] = {}

    def begin(self, username: str, address: str) -> float:
        """Counts an attempt and returns its mark; raises ``LoginThrottled`` past a limit."""
        now = self._clock()
        keys = ((_user_key(username), self.per_user), ("addr:" + address, self.per_address))
        wait = max(self._wait(key, limit, now) for key, limit in keys)
        if wait > 0:
            raise LoginThrottled(wait)
        for key, _ in keys:
            self._attempts.setdefault(key, deque()).append(now)
        self._bound(now)
        return now

    def succeeded(self, username: str, address: str, mark: float) -> None:
        self._attempts.pop(_user_key(username), None)
        stamps = self._attempts.get("addr:" + address)
        if stamps is not None and mark in stamps:
            stamps.remove(mark)

    def _wait(self, key: str, limit: int, now: float) -> float:
        stamps = self._attempts.get(key)
        if not stamps:
            return 0.0
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if len(stamps) < limit:
            return 0.0
        return stamps[-limit] + self.window - now

    def _bound(self, now: float) -> None:
        # A flood of made-up user names must not grow the table without end.
        if len(self._attempts) <= self._max_keys:
            return
        for key in [k for k, v in self._attempts.items() if not v or v[-1] <= now - self.window]:
            del self._attempts[key]
        while len(self._attempts) > self._max_keys:
            del self._attempts[next(iter(self._attempts))]


def _user_key(username: str) -> str:
    return "user:" + username.strip().lower()[:64]


class Accounts:
    def __init__(self, agents: Iterable[Agent], throttle: LoginThrottle | None = None) -> None:
        self._agents: dict[str, Agent] = {}
        for agent in agents:
            if not AGENT_ID.fullmatch(agent.id):
                raise ValueError(f"agent id {agent.id!r} must match {AGENT_ID.pattern}")
            if not INTERFACE.fullmatch(agent.interface):
                raise ValueError(f"agent {agent.id}: interface must look like PJSIP/name")
            if agent.id in self._agents:
                raise ValueError(f"agent id {agent.id!r} appears twice")
            self._agents[agent.id] = agent
        self.throttle = throttle or LoginThrottle()
        self._dummy_hash: str | None = None
        self._verifying = asyncio.Semaphore(2)     # bounds scrypt's memory and CPU

    @classmethod
    def load(cls, path: str | Path, throttle: LoginThrottle | None = None) -> "Accounts":
        """Reads the TOML accounts file (at start-up)."""
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        tables = data.get("agent")
        if not isinstance(tables, list) or not tables:
            raise ValueError(f"{path}: no [[agent]] tables")
        agents = []
        for table in tables:
            try:
                agents.append(Agent(id=str(table["id"]), name=str(table.get("name", table["id"])),
                                    interface=str(table["interface"]),
                                    password_hash=str(table["password_hash"])))
            except KeyError as missing:
                raise ValueError(f"{path}: an agent lacks {missing}") from None
        return cls(agents, throttle)

    @classmethod
    def demo(cls, password: str, throttle: LoginThrottle | None = None, *,
             interface: str = "PJSIP/{agent}") -> "Accounts":
        """agent1 and agent2 with one password; ``interface`` is how the queue rings them
        (their softphones PJSIP/agent1, PJSIP/agent2 unless said otherwise)."""
        _check_new_password(password)
        return cls([Agent(f"agent{i}", f"Agent {i}", interface.format(agent=f"agent{i}"),
                          hash_password(password)) for i in (1, 2)], throttle)

    @classmethod
    def from_settings(cls, settings, *, demo_interface: str = "PJSIP/{agent}") -> "Accounts":
        throttle = LoginThrottle(per_user=settings.desk_login_failures,
                                 per_address=settings.desk_login_address_failures,
                                 window=settings.desk_login_window_minutes * 60)
        if settings.desk_agents:
            return cls.load(settings.desk_agents, throttle)
        if not settings.agent_password:
            raise ValueError("IVR_DESK_AGENTS or IVR_AGENT_PASSWORD must be set for the desk")
        return cls.demo(settings.agent_password, throttle, interface=demo_interface)

    def get(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    def __iter__(self):
        return iter(self._agents.values())

    async def authenticate(self, username: str, password: str, address: str) -> Agent | None:
        """The agent, or None for a wrong user name or password; raises ``LoginThrottled``."""
        mark = self.throttle.begin(username, address)
        agent = self._agents.get(username)
        too_long = len(password) > MAX_PASSWORD
        if agent is None or too_long:
            # The same work as a real check: timing does not tell which user names exist.
            stored, password = None, "x" * 16
        else:
            stored = agent.password_hash
        async with self._verifying:
            ok = await asyncio.to_thread(self._verify, password, stored)
        if not ok or agent is None or too_long:
            return None
        self.throttle.succeeded(username, address, mark)
        return agent

    def _verify(self, password: str, stored: str | None) -> bool:
        """In a worker thread. ``stored`` None: check against a throw-away hash."""
        if stored is None:
            if self._dummy_hash is None:
                self._dummy_hash = hash_password(secrets.token_urlsafe(16))
            stored = self._dummy_hash
        return verify_password(password, stored)


def _check_new_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"an agent's password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def main(argv: list[str] | None = None) -> int:
    """``python -m ivr.desk.accounts``: reads a password (twice on a terminal, else one
    line of standard input) and prints the ``password_hash`` line for the accounts file."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        _check_new_password(password)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    print(f'password_hash = "{hash_password(password)}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
