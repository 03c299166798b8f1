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

A placeholder can end with no result to report: the queue's own timeout, an Asterisk
restart, an Originate that never made a channel. Every ``IVR_CALLBACK_WATCH_SECONDS`` the
scheduler asks Asterisk which channels carry a queued callback's id (AMI Status); a
callback queued for longer than that with no channel left is placed again, in its place
(not an attempt: nobody dialled the caller).

The callbacks still to be made and those ended lately (with their attempts, the number
masked) are kept in ``board`` for the desk's queue board, read again every few seconds
(callbacks are made by the IVR, in another process) and after every change made here.
"""
from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from ..background import Background
from ..records import now_iso
from .hours import StaffedHours
from .order import queue_priority

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
BOARD_SECONDS = 5.0                          # the board's list read again this often
BOARD_HOURS = 12                             # ended callbacks stay on the board this long
ORIGINATE_TIMEOUT_MS = 4 * 3600 * 1000      # how long a placeholder may wait for an agent
_ID = re.compile(r"[0-9a-f]{32}")
_STATUS = re.compile(r"[A-Z]{1,20}")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class CallbackScheduler:
    def __init__(self, store, ami, *, attempts: int = 3, retry_seconds: float = 300.0,
                 watch_seconds: float = 60.0, poll: float = POLL_SECONDS,
                 board_seconds: float = BOARD_SECONDS,
                 clock: Callable[[], datetime] = _now, hours: StaffedHours | None = None,
                 on_board: Callable[[list[dict]], None] | None = None) -> None:
        self.store = store
        self.ami = ami
        self.hours = hours or StaffedHours()
        self.attempts = max(1, attempts)
        self.retry_seconds = retry_seconds
        self.watch_seconds = watch_seconds
        self.poll = poll
        self.board_seconds = board_seconds
        self.clock = clock
        self.on_board = on_board
        self.board: list[dict] = []
        self._task: asyncio.Task | None = None
        self._background = Background(log, "callbacks")
        self._results: asyncio.Lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, store, ami, settings, **kwargs) -> "CallbackScheduler":
        return cls(store, ami, attempts=settings.callback_attempts,
                   retry_seconds=settings.callback_retry_seconds,
                   watch_seconds=settings.callback_watch_seconds,
                   hours=StaffedHours.from_settings(settings), **kwargs)

    def _staffed(self, at: datetime) -> str:
        """``at``, or the start of the next staffed period when nobody works then (a retry
        or a lost placeholder waits for the agents, as the caller was told)."""
        return (self.hours.next_open(at) or at).isoformat()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await self._background.stop(self._task)

    def _spawn(self, coro: Awaitable[Any], what: str) -> None:
        self._background.spawn(coro, what)

    # --- placing

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_board = next_watch = loop.time()
        while True:
            await asyncio.sleep(self.poll)
            try:
                if loop.time() >= next_board:
                    next_board = loop.time() + self.board_seconds
                    await self.refresh_board()
                if getattr(self.ami, "state", "up") != "up":
                    continue
                if loop.time() >= next_watch:
                    next_watch = loop.time() + self.watch_seconds
                    await self._watch_quietly()
                due = await self.store.callbacks_due(self.clock().isoformat())
            except Exception as exc:
                log.warning("callbacks: store or Asterisk unavailable: %s",
                            exc or type(exc).__name__)
                continue
            for callback in due:
                try:
                    await self.place(callback)
                except Exception as exc:
                    log.warning("callbacks: %s not placed: %s", callback["id"],
                                exc or type(exc).__name__)
            if due:
                await self._refresh_board_quietly()

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
        if not await self.store.callback_set(callback["id"], "queued", expect="scheduled"):
            return         # another desk sharing the store placed it first
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

    # --- placeholders gone without a result

    async def watch(self) -> list[str]:
        """Place again the callbacks queued for longer than ``watch_seconds`` whose
        placeholder Asterisk no longer has. Returns their ids."""
        since = self.clock() - timedelta(seconds=self.watch_seconds)
        queued = [c for c in await self.store.callbacks(status="queued")
                  if datetime.fromisoformat(c["updated_at"]) <= since]
        if not queued:
            return []
        live = await self._live_callbacks()
        placed_again = []
        # A result Asterisk sent before the Status list was spawned before this resumes
        # and took the lock first: the status read again under the lock tells.
        async with self._results:
            for callback in queued:
                if callback["id"] in live:
                    continue
                again = await self.store.get_callback(callback["id"])
                if again is None or again["updated_at"] != callback["updated_at"]:
                    continue
                if not await self.store.callback_set(callback["id"], "scheduled",
                                                     self._staffed(self.clock()),
                                                     expect="queued"):
                    continue
                placed_again.append(callback["id"])
                log.warning("callbacks: %s had no placeholder left in Asterisk (the queue's "
                            "timeout or a restart): placed again in its place",
                            callback["id"])
        return placed_again

    async def _watch_quietly(self) -> None:
        """The watchdog, its failure (Asterisk slow to list its channels) logged: the due
        callbacks are placed all the same."""
        try:
            await self.watch()
        except Exception as exc:
            log.warning("callbacks: lost placeholders not looked for: %s",
                        exc or type(exc).__name__)

    async def _live_callbacks(self) -> set[str]:
        """The callback ids on Asterisk's channels now (both halves of a placeholder and
        the call to the number carry IVR_CALLBACK_ID)."""
        items = await self.ami.action_list({"Action": "Status", "Variables": "IVR_CALLBACK_ID"})
        live = set()
        for item in items[1:]:
            if item.get("Event") != "Status":
                continue
            name, _, value = str(item.get("Variable") or "").partition("=")
            # (with IVR_CALLBACK_ID in manager.conf's channelvars it is a ChanVariable too)
            chan = item.get("ChanVariables")
            for found in (value if name == "IVR_CALLBACK_ID" else "",
                          chan.get("IVR_CALLBACK_ID", "") if isinstance(chan, dict) else ""):
                if _ID.fullmatch(found):
                    live.add(found)
        return live

    # --- the desk's board

    async def refresh_board(self) -> list[dict]:
        since = self.clock() - timedelta(hours=BOARD_HOURS)
        board = [_on_board(c) for c in await self.store.callbacks_board(since.isoformat())]
        if board != self.board:
            self.board = board
            if self.on_board is not None:
                self.on_board(board)
        return board

    async def _refresh_board_quietly(self) -> None:
        try:
            await self.refresh_board()
        except Exception as exc:
            log.warning("callbacks: board not read: %s", type(exc).__name__)

    # --- results

    def on_event(self, event: dict) -> None:
        if event.get("Event") != "UserEvent" or event.get("UserEvent") != "IvrCallback":
            return
        callback_id, status = event.get("CallbackId", ""), event.get("DialStatus", "")
        if _ID.fullmatch(callback_id) and _STATUS.fullmatch(status):
            self._spawn(self._report(callback_id, status), f"result of {callback_id}")

    async def _report(self, callback_id: str, dial_status: str) -> None:
        await self.result(callback_id, dial_status)
        await self._refresh_board_quietly()

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
                due = self._staffed(now + timedelta(seconds=self.retry_seconds))
            await self.store.callback_set(callback_id, status, due, expect="queued")
            log.info("callbacks: %s attempt %d: %s -> %s (%s)", callback_id, n, dial_status,
                     status, now_iso())
            return status


def _on_board(callback: dict) -> dict:
    """What agents see of a callback: never the number in clear."""
    return {"id": callback["id"], "call_id": callback["call_id"], "status": callback["status"],
            "number_masked": callback["number_masked"], "joined_at": callback["joined_at"],
            "due_at": callback["due_at"],
            "attempts": [{"n": a["n"], "at": a["at"], "result": a["result"]}
                         for a in callback["attempts"]]}
