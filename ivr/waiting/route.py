"""The ``queue-wait`` FastAGI route: the dialplan's waiting loop (extensions.conf,
[hotline-route] ``queue``) calls it on entry, at every announcement interval and when the
caller's time in line is up. It speaks, runs the callback dialog, keeps the queue history
it alone knows (a callback, the loop's timeout; a hang-up is the desk's, from the
dialplan's IvrHangup report) and leaves its decision in channel variables:

    IVR_WAIT_ACTION    stay | hold (no more announcements) | callback | hangup
    IVR_CALLBACK_ID    the callback made (empty otherwise)
    __IVR_QUEUE_JOINED epoch seconds of the first join (set on entry; the desk's board
                       and store keep it as the join time)
    IVR_QUEUE_PRIO     the caller's queue priority, from that first join (order.py)

Arguments (agi_arg_1..7): phase (enter, again, timeout), Asterisk's position (used only
when the store cannot say, see ``_position``), agents logged in,
agents paused (empty: the route counts them, QUEUE_MEMBER has no count of paused
members), IVR_QUEUE_JOINED, IVR_CALL_ID, agents free (on entry, a caller an agent is
free for hears nothing and goes straight to the queue).
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Callable

from ..agi.channel import AgiCall
from ..agi.session import AgiSession, SessionClosed
from ..call import CallerHungUp
from ..dialog import Dialog
from ..privacy import mask_caller
from ..records import now_iso
from .dialog import WaitContext, WaitingDialog, WaitResult, WaitSettings
from .hours import StaffedHours
from .order import queue_priority

log = logging.getLogger(__name__)

ROUTE = "queue-wait"
PHASES = ("enter", "again", "timeout")
_CALL_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_LIMIT = 100_000
_INTERFACE = re.compile(r"[A-Za-z0-9/@._-]{1,100}")
MAX_MEMBERS = 200
# Callers who first joined longer ago than this are no longer counted ahead of anyone (a
# row left open by a crash must not push everyone back for ever); above IVR_QUEUE_TIMEOUT.
QUEUE_WINDOW_SECONDS = 2 * 3600


def _count(value: str | None) -> int:
    return int(value) if value and value.isdigit() and int(value) < _LIMIT else 0


def _epoch(value: str | None) -> float:
    try:
        epoch = float(value or "")
    except ValueError:
        return 0.0
    return epoch if 1e9 < epoch < 1e10 else 0.0


def context(headers: dict[str, str], now: float) -> WaitContext | None:
    """The dialplan's arguments, checked; None when they make no sense."""
    phase = headers.get("agi_arg_1", "")
    if phase not in PHASES:
        return None
    call_id = headers.get("agi_arg_6", "")
    if not _CALL_ID.fullmatch(call_id):
        call_id = headers.get("agi_uniqueid", "")
    joined = _epoch(headers.get("agi_arg_5")) or now
    return WaitContext(phase=phase, position=max(1, _count(headers.get("agi_arg_2"))),
                       logged_in=_count(headers.get("agi_arg_3")),
                       paused=_count(headers.get("agi_arg_4")), joined_at=min(joined, now),
                       call_id=call_id, caller=headers.get("agi_callerid", ""),
                       free=_count(headers.get("agi_arg_7")))


class WaitRoute:
    def __init__(self, settings, catalog, store,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.hours = StaffedHours.from_settings(settings, clock=lambda: self.clock())
        self.wait_settings = WaitSettings(offer_after=settings.callback_offer_after,
                                          offer_over=settings.callback_offer_over,
                                          handle_s=settings.wait_handle_seconds,
                                          history_minutes=settings.wait_history_minutes,
                                          stay_at=settings.wait_stay_at)

    async def handle(self, session: AgiSession) -> None:
        headers = session.headers
        now = self.clock()
        ctx = context(headers, now.timestamp())
        call = AgiCall(session)
        if ctx is None:
            log.warning("queue-wait: arguments refused; the caller goes back to the queue")
            await self._leave(call, WaitResult(), None)
            return
        if ctx.phase == "timeout":
            await self._history(ctx.call_id, "timeout")
            await self._leave(call, WaitResult(action="hangup"), None)
            return
        if ctx.logged_in and not headers.get("agi_arg_4"):
            ctx.paused = await self._paused(session)
        ctx.position = await self._position(ctx, now)
        dialog = Dialog(call, self.catalog, menu_timeout=self.settings.menu_timeout,
                        first_digit_timeout=self.settings.first_digit_timeout,
                        inter_digit_timeout=self.settings.inter_digit_timeout)
        waiting = WaitingDialog(dialog, self.store, self.hours, self.wait_settings, self.clock)
        result = WaitResult()
        try:
            result = await waiting.run(ctx)
        except (CallerHungUp, SessionClosed):     # the desk records it (IvrHangup)
            log.info("queue-wait %s: caller %s hung up (%s)", ctx.call_id,
                     mask_caller(ctx.caller), ctx.phase)
            return
        except Exception:
            log.exception("queue-wait %s failed; the caller goes back to the queue",
                          ctx.call_id)
        if result.action == "callback" and not result.closed:   # closed: never queued
            await self._history(ctx.call_id, "callback")
        log.info("queue-wait %s: %s position=%d agents=%d/%d estimate=%s -> %s%s", ctx.call_id,
                 ctx.phase, ctx.position, ctx.agents_taking_calls, ctx.logged_in,
                 "none" if result.estimate_s is None else round(result.estimate_s),
                 result.action, " (closed)" if result.closed else "")
        await self._leave(call, result, ctx)

    async def _position(self, ctx: WaitContext, now: datetime) -> int:
        """The caller's place: those who first joined earlier and still wait, callbacks
        included, from the store. Not Asterisk's position: a caller ahead who is hearing
        an announcement is out of Asterisk's queue for those seconds, yet ahead (their
        priority puts them back there). Asterisk's (the dialplan's argument) only when
        the store cannot say."""
        joined = datetime.fromtimestamp(ctx.joined_at, timezone.utc)
        since = joined - timedelta(seconds=QUEUE_WINDOW_SECONDS)
        try:
            ahead = await self.store.queue_ahead(joined.isoformat(), now.isoformat(),
                                                 since.isoformat())
            log.debug("queue-wait %s: %d ahead of a join at %s", ctx.call_id, ahead,
                      joined.isoformat())
            return 1 + ahead
        except Exception as exc:
            log.warning("queue-wait %s: place from Asterisk (store: %s)", ctx.call_id,
                        type(exc).__name__)
            return ctx.position

    async def _paused(self, session: AgiSession) -> int:
        """Members of the queue who are paused (the desk's breaks and wrap-ups)."""
        queue = self.settings.desk_queue
        try:
            reply = await session.send("GET FULL VARIABLE", f"${{QUEUE_MEMBER_LIST({queue})}}")
            members = [m for m in (reply.data or "").split(",") if _INTERFACE.fullmatch(m)]
            paused = 0
            for member in members[:MAX_MEMBERS]:
                reply = await session.send("GET FULL VARIABLE",
                                           f"${{QUEUE_MEMBER({queue},paused,{member})}}")
                paused += reply.data == "1"
            return paused
        except Exception as exc:
            log.info("queue-wait: paused members not counted: %s", type(exc).__name__)
            return 0

    async def _history(self, call_id: str, result: str) -> None:
        try:
            await self.store.queue_left(call_id, result, now_iso())
        except Exception as exc:
            log.warning("queue-wait %s: queue history not kept: %s", call_id,
                        type(exc).__name__)

    async def _leave(self, call: AgiCall, result: WaitResult, ctx: WaitContext | None) -> None:
        values = {"IVR_WAIT_ACTION": result.action, "IVR_CALLBACK_ID": result.callback_id}
        if ctx is not None:
            values["__IVR_QUEUE_JOINED"] = f"{ctx.joined_at:.3f}"
            values["IVR_QUEUE_PRIO"] = str(queue_priority(ctx.joined_at))
        try:
            for name, value in values.items():
                await call.set_variable(name, value)
        except Exception as exc:
            log.info("queue-wait: variables not left: %s", type(exc).__name__)
