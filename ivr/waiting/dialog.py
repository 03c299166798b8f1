"""What a waiting caller hears and answers (the ``queue-wait`` route's words): position
and expected wait, the callback offer, the callback number dialog; outside staffed hours
the closed notice and the callback for the next staffed period.

No I/O of its own beyond the ``Dialog`` and the ``Callbacks`` it is given; it decides
nothing about timing (the dialplan calls it on entry and every announcement interval).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from .. import speech
from ..dialog import Dialog, Ending, Retry, Utterance
from ..privacy import mask_number
from .estimate import QueueStats, expected_wait, minutes
from .hours import StaffedHours
from .numbers import callback_number

log = logging.getLogger(__name__)

# The catalog's prompts this dialog plays ([waiting.prompts] in prompts/catalog.toml).
PROMPTS = frozenset({
    "wait-position", "wait-next", "wait-estimate", "wait-no-estimate", "wait-under-minute",
    "callback-offer", "callback-readback", "callback-confirm", "callback-enter-number",
    "callback-number-invalid", "callback-confirmed", "callback-back-to-queue",
    "callback-goodbye", "closed-now", "closed-callback-offer", "callback-next-period"})
NUMBER_TRIES = 3
OFFER_WAIT_SECONDS = 3.0      # after the offer: short, the caller is out of the queue
MAX_NUMBER_DIGITS = 16


class Callbacks(Protocol):
    async def callback_create(self, callback: dict) -> None: ...
    async def queue_stats(self, since: str) -> dict: ...


@dataclass
class WaitContext:
    """What the dialplan passes to the route (agi_arg_1..5), checked."""
    phase: str               # "enter" (first time), "again" (each interval)
    position: int            # 1-based place in line
    logged_in: int           # agents in the queue (QUEUE_MEMBER logged)
    paused: int              # of them paused
    joined_at: float         # epoch seconds of the first join (0: now)
    call_id: str = ""
    caller: str = ""
    free: int = 0            # agents free now (QUEUE_MEMBER free)

    @property
    def agents_taking_calls(self) -> int:
        return max(0, self.logged_in - self.paused)


@dataclass
class WaitResult:
    action: str = "stay"          # "stay" (back to the queue, announced again), "hold"
                                  # (back to the queue for good), "callback", "hangup"
    callback_id: str = ""
    closed: bool = False
    estimate_s: float | None = None


@dataclass(frozen=True)
class WaitSettings:
    offer_after: float = 60.0
    offer_over: float = 180.0
    handle_s: float = 240.0
    history_minutes: float = 60.0
    stay_at: int = 3


class WaitingDialog:
    def __init__(self, dialog: Dialog, callbacks: Callbacks, hours: StaffedHours,
                 settings: WaitSettings, now) -> None:
        self.dialog = dialog
        self.callbacks = callbacks
        self.hours = hours
        self.settings = settings
        self.now = now                  # () -> aware datetime

    async def run(self, ctx: WaitContext) -> WaitResult:
        result = WaitResult()
        if ctx.phase == "enter" and not self.hours.is_open(self.now()):
            result.closed = True
            await self._closed(ctx, result)
            return result
        if ctx.phase == "enter" and ctx.free > 0 and ctx.position <= 1:
            return result       # an agent is free for this caller: no word, no delay
        stats = await self._stats()
        result.estimate_s = expected_wait(ctx.position, ctx.agents_taking_calls, stats,
                                          self.settings.handle_s)
        await self.dialog.say(*self._announcement(ctx.position, result.estimate_s))
        waited = max(0.0, self.now().timestamp() - ctx.joined_at) if ctx.joined_at else 0.0
        offer = (waited >= self.settings.offer_after
                 or (result.estimate_s is not None and result.estimate_s > self.settings.offer_over))
        if offer:
            await self.dialog.say(self.dialog.prompt("callback-offer"), barge_in=True)
            key = await self.dialog.key(OFFER_WAIT_SECONDS)
            if key == "1":
                self.dialog.menu_keys.append(key)
                await self._callback(ctx, result, due=None)
                if result.action == "stay":          # no number: back to the line
                    await self.dialog.say(self.dialog.prompt("callback-back-to-queue"))
        if result.action == "stay" and ctx.position <= self.settings.stay_at:
            result.action = "hold"     # near the head: never out of the queue again
        return result

    async def _stats(self) -> QueueStats:
        since = self.now() - timedelta(minutes=self.settings.history_minutes)
        try:
            raw = await self.callbacks.queue_stats(since.isoformat())
        except Exception as exc:   # no store: the configured handle time
            log.warning("queue statistics unavailable: %s", type(exc).__name__)
            return QueueStats()
        return QueueStats(**raw)

    def _announcement(self, position: int, estimate: float | None) -> list[Utterance]:
        d = self.dialog
        said = [d.prompt("wait-next")] if position <= 1 else [
            d.prompt("wait-position"), d.spoken(speech.number(position))]
        if estimate is None:
            said.append(d.prompt("wait-no-estimate"))
        elif estimate < 60:
            said.append(d.prompt("wait-under-minute"))
        else:
            said += [d.prompt("wait-estimate"),
                     d.spoken(speech.number(minutes(estimate)) + ("wait-minutes",))]
        return said

    async def _closed(self, ctx: WaitContext, result: WaitResult) -> None:
        d = self.dialog
        await d.say(d.prompt("closed-now"))
        due = self.hours.next_open(self.now())
        if due is None:
            await d.say(d.prompt("callback-goodbye"))
            result.action = "hangup"
            return
        choice = await d.menu([d.prompt("closed-callback-offer")], "12",
                              Retry(silent=2, invalid=3))
        if choice == "1":
            await self._callback(ctx, result, due=due)
            if result.action == "stay":      # no number: nothing to wait for while closed
                result.action = "hangup"
                await d.say(d.prompt("callback-goodbye"))
        else:
            result.action = "hangup"
            await d.say(d.prompt("callback-goodbye"))

    async def _number(self, caller: str) -> str | None:
        """The confirmed number, or None after too many invalid entries or silences."""
        d = self.dialog
        candidate = callback_number(caller)
        tries = 0
        while tries < NUMBER_TRIES:
            if candidate is None:
                got = await d.gather(d.prompt("callback-enter-number"),
                                     max_digits=MAX_NUMBER_DIGITS)
                candidate = callback_number(got.digits)
                if candidate is None:
                    tries += 1
                    if got.digits or got.ended_by == "terminator":
                        await d.say(d.prompt("callback-number-invalid"))
                    continue
            choice = await d.menu([d.prompt("callback-readback"), d.secret_digits(candidate),
                                   d.prompt("callback-confirm")], "12", Retry(silent=2))
            if choice == "1":
                return candidate
            if isinstance(choice, Ending):
                return None
            candidate = None       # "2": key another
        return None

    async def _callback(self, ctx: WaitContext, result: WaitResult,
                        due: datetime | None) -> None:
        d = self.dialog
        number = await self._number(ctx.caller)
        if number is None:
            return
        now = self.now()
        callback_id = uuid.uuid4().hex
        joined = ctx.joined_at or now.timestamp()
        await self.callbacks.callback_create({
            "id": callback_id, "call_id": ctx.call_id, "number": number,
            "number_masked": mask_number(number),
            "joined_at": datetime.fromtimestamp(joined, now.tzinfo).isoformat(),
            "due_at": (due or now).isoformat(), "status": "scheduled"})
        log.info("call %s: callback %s to %s %s", ctx.call_id, callback_id, mask_number(number),
                 "at " + due.isoformat() if due else "keeping its place")
        result.action, result.callback_id = "callback", callback_id
        await d.say(d.prompt("callback-confirmed"), d.secret_digits(number))
        if due is not None and due > now:
            await d.say(d.prompt("callback-next-period"), *self._when(due, now))
        await d.say(d.prompt("callback-goodbye"))

    def _when(self, due: datetime, now: datetime) -> list[Utterance]:
        d = self.dialog
        local, today = self.hours.local(due), self.hours.local(now).date()
        if local.date() == today:
            day = ("day-today",)
        elif local.date() == today + timedelta(days=1):
            day = ("day-tomorrow",)
        else:
            day = speech.spoken_date(local.date())
        hour = ("at-hour",) + speech.number(local.hour)
        if local.minute:
            hour += speech.number(local.minute)
        return [d.spoken(day + hour)]
