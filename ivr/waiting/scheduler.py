"""Callbacks, from the request to the result, in the agent desk's process (it has the
store and the AMI link already; one desk per Asterisk, so one scheduler).

Every ``poll`` seconds the callbacks whose time has come (``scheduled``, ``due_at`` past:
at once when made in staffed hours, else the next staffed period) are placed: their
placeholder, a Local channel, is originated into the queue with the priority of the
caller's first join (``queued``), so it waits among the callers in its caller's place.
When an agent answers it the desk pops the call (the placeholder carries the call's
IVR_* variables), and the other half dials the number through ``IVR_CALLBACK_TRUNK``.
The dialplan reports each attempt (UserEvent IvrCallback, DIALSTATUS); ANSWER completes
the callback, anything else is retried ``IVR_CALLBACK_RETRY_SECONDS`` later, in its place
again, until ``IVR_CALLBACK_ATTEMPTS`` attempts have failed (``failed``).
"""
from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from ..background import Background
from ..records import now_iso
from .order import queue_priority

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
ORIGINATE_TIMEOUT_MS = 4 * 3600 * 1000      # how long a placeholder may wait for an agent
_ID = re.compile(r"[0-9a-f]{32}")
_STATUS = re.compile(r"[A-Z]{1,20}")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class CallbackScheduler:
    def __init__(self, store, ami, *, attempts: int = 3, retry_seconds: float = 300.0,
                 poll: float = POLL_SECONDS, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self.ami = ami
        self.attempts = max(1, attempts)
        self.retry_seconds = retry_seconds
        self.poll = poll
        self.clock = clock
        self._task: asyncio.Task | None = None
        self._background = Background(log, "callbacks")
        self._results: asyncio.Lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, store, ami, settings, **kwargs) -> "CallbackScheduler":
        return cls(store, ami, attempts=settings.callback_attempts,
                   retry_seconds=settings.callback_retry_seconds, **kwargs)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await self._background.stop(self._task)

    def _spawn(self, coro: Awaitable[Any], what: str) -> None:
        self._background.spawn(coro, what)

    # --- placing

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            if getattr(self.ami, "state", "up") != "up":
                continue
            try:
                due = await self.store.callbacks_due(self.clock().isoformat())
            except Exception as exc:
                log.warning("callbacks: store unavailable: %s", type(exc).__name__)
                continue
            for callback in due:
                try:
                    await self.place(callback)
                except Exception as exc:
                    log.warning("callbacks: %s not placed: %s", callback["id"],
                                exc or type(exc).__name__)

    async def place(self, callback: dict) -> None:
        """The placeholder into the queue, in the place of the caller's first join."""
        record = await self.store.get_record(callback["call_id"]) or {}
        joined = datetime.fromisoformat(callback["joined_at"]).timestamp()
        verified = bool(record.get("verified"))
        variables = {
            "IVR_CALL_ID": callback["call_id"],
            "IVR_TRANSFER_REASON": record.get("transfer_reason") or "",
            "IVR_VERIFIED": "1" if verified else "0",
            "IVR_MEMBER_STATUS": (record.get("member_status") or "") if verified else "",
            "IVR_CARD": (record.get("card") or "") if verified else "",
            "IVR_QUEUE_JOINED": f"{joined:.3f}",
            "IVR_QUEUE_PRIO": str(queue_priority(joined)),
            "IVR_CALLBACK_ID": callback["id"],
            "IVR_CALLBACK_NUMBER": callback["number"],
        }
        await self.store.callback_set(callback["id"], "queued")
        try:
            await self.ami.action({
                "Action": "Originate", "Channel": "Local/queue@waiting-callback/n",
                "Context": "waiting-callback-dial", "Exten": "s", "Priority": "1",
                "Async": "true", "Timeout": str(ORIGINATE_TIMEOUT_MS),
                "CallerID": f"Callback <{callback['number_masked']}>",
                "Variable": [f"__{k}={v}" if k.startswith("IVR_") and k not in (
                    "IVR_CALLBACK_NUMBER", "IVR_QUEUE_PRIO") else f"{k}={v}"
                    for k, v in variables.items()]})
        except Exception:
            await self.store.callback_set(callback["id"], "scheduled")   # next round
            raise
        log.info("callbacks: %s queued for call %s (%s)", callback["id"], callback["call_id"],
                 callback["number_masked"])

    # --- results

    def on_event(self, event: dict) -> None:
        if event.get("Event") != "UserEvent" or event.get("UserEvent") != "IvrCallback":
            return
        callback_id, status = event.get("CallbackId", ""), event.get("DialStatus", "")
        if _ID.fullmatch(callback_id) and _STATUS.fullmatch(status):
            self._spawn(self.result(callback_id, status), f"result of {callback_id}")

    async def result(self, callback_id: str, dial_status: str) -> str | None:
        """One attempt's end: completed, retried later, or failed. Returns the new status."""
        async with self._results:      # one result at a time: attempts are numbered
            callback = await self.store.get_callback(callback_id)
            if callback is None or callback["status"] != "queued":
                return None
            now = self.clock()
            n = await self.store.callback_attempt(callback_id, dial_status.lower(),
                                                  now.isoformat())
            if dial_status == "ANSWER":
                status, due = "completed", None
            elif n >= self.attempts:
                status, due = "failed", None
            else:
                status = "scheduled"
                due = (now + timedelta(seconds=self.retry_seconds)).isoformat()
            await self.store.callback_set(callback_id, status, due)
            log.info("callbacks: %s attempt %d: %s -> %s (%s)", callback_id, n, dial_status,
                     status, now_iso())
            return status
