"""Live announcement and self-service mode: set by an operator with ``ivr service ...``,
kept in the shared store (``ivr.store``: SQLite, or PostgreSQL for several IVR servers),
read by every worker and server with a short cache, so a change takes effect on the next
call everywhere within ``CACHE_SECONDS``, without a restart.

Modes: ``normal``; ``agents_only`` (after the greeting and any announcement every caller
goes to an agent, reason ``service_unavailable``); ``status_only`` (self-service says the
membership status but not the bill). If the store cannot be read, the last values read
stay (and ``IVR_ANNOUNCEMENT`` before any was read): a store outage never blocks a call.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)

CACHE_SECONDS = 2.0
# A read of the store that takes longer than this keeps the cached values for this call.
READ_TIMEOUT = 0.5


class Mode(StrEnum):
    NORMAL = "normal"
    AGENTS_ONLY = "agents_only"
    STATUS_ONLY = "status_only"


@dataclass(frozen=True)
class ServiceState:
    announcement: str = ""
    mode: Mode = Mode.NORMAL


class ServiceModes:
    def __init__(self, store, default: ServiceState = ServiceState(),
                 cache_seconds: float = CACHE_SECONDS, known_prompts=None) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.known_prompts = known_prompts
        self._state = default
        self._read_at: float | None = None
        self._reading: asyncio.Task | None = None
        self._failing = False
        self._slow = False      # a read outlasted READ_TIMEOUT and has not ended yet

    async def current(self) -> ServiceState:
        loop = asyncio.get_running_loop()
        if self._read_at is not None and loop.time() - self._read_at < self.cache_seconds:
            return self._state
        if self._reading is None or self._reading.done():   # one read for all calls
            self._reading = loop.create_task(self._read())
        if self._slow:          # a read hangs already: no call waits for it, it goes on
            return self._state
        try:
            await asyncio.wait_for(asyncio.shield(self._reading), READ_TIMEOUT)
        except TimeoutError:
            self._slow = True
            log.warning("the live service settings are slow to read; keeping the last ones")
        return self._state

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            rows = await self.store.service_settings()
        except Exception as exc:
            self._slow = False
            if not self._failing:
                self._failing = True
                log.warning("cannot read the live service settings (%s); keeping the last ones",
                            type(exc).__name__)
            self._read_at = loop.time()     # try again after the cache time, not per call
            return
        self._slow = False
        if self._failing:
            self._failing = False
            log.info("live service settings readable again")
        announcement = rows.get("announcement", {}).get("value", self._state.announcement)
        if announcement and self.known_prompts is not None \
                and announcement not in self.known_prompts:
            log.error("live announcement %r is not a prompt id: ignored", announcement[:64])
            announcement = ""
        try:
            mode = Mode(rows.get("mode", {}).get("value", Mode.NORMAL))
        except ValueError:
            mode = Mode.NORMAL
        self._state = ServiceState(announcement, mode)
        self._read_at = loop.time()
