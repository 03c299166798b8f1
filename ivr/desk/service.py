"""The agent desk's hub: what each agent is doing, what the queue holds, and what an agent
may see of a call, with Asterisk as the source of truth.

AMI events go through the ``QueueBoard`` (who waits, who rings, who talks); the hub turns
its changes into the agents' live streams (``ringing``, ``connected``, ``ended``, ``queue``,
``me``, ``asterisk``) and the store's queue history. Presence changes are AMI actions
(``QueueAdd``, ``QueuePause``, ``QueueRemove``); an agent's state is read back from the
board, never assumed. After a call the desk pauses the agent ("wrap_up") until the wrap-up
is saved, so that the queue does not ring an agent who is still writing.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol

from ..background import Background
from ..records import now_iso
from .board import Change, Entry, QueueBoard
from .errors import DeskError

log = logging.getLogger(__name__)

STATES = ("ready", "paused", "offline")
PAUSE_REASONS = ("break", "meeting", "after_call_work")
WRAP_UP = "wrap_up"                 # the pause reason the desk itself sets after a call
NOTE_LIMIT = 1000
STREAM_DEPTH = 256                  # events queued for one page before old ones are dropped
QUEUE_PUSH_SECONDS = 0.25           # queue board updates are coalesced to this rate
LEAVE_SETTLE_SECONDS = 3.0          # a caller who left without an agent: timeout, not answered
RING_SETTLE_SECONDS = 1.0           # a caller who left while ringing agents: no one answered
# HOTLINE_ROUTE of a caller in the dialplan's waiting loop (extensions.conf hotline-route)
WAITING_ROUTES = ("queue", "error", "fallback")
RECENT_CALLS = 10_000               # calls remembered as answered / left, the latest
RESYNC_RETRY_SECONDS = 2.0          # a failed resynchronisation is tried again this soon
CONFIRM_SECONDS = 2.0               # how long a presence change waits to be seen in Asterisk


class Ami(Protocol):
    state: str
    async def action(self, action: dict) -> dict: ...


class Account(Protocol):
    id: str
    name: str
    interface: str


class Accounts(Protocol):
    def get(self, agent_id: str) -> Account | None: ...


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    except ValueError:
        return None
    return round(delta.total_seconds(), 1)


def _asterisk_time(event: dict) -> dict:
    """When Asterisk sent the event (manager.conf's timestampevents), for the page and the
    figures of the time from ringing to the pop."""
    try:
        return {"asterisk_at": float(event["Timestamp"])}
    except (KeyError, ValueError):
        return {}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


class Recent:
    """A set of the last ``size`` items added."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, None] = OrderedDict()

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        return item in self._items


class Desk:
    def __init__(self, store, board: QueueBoard, accounts: Accounts, *,
                 queue: str = "agents", dispositions: list[str],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.board = board
        self.accounts = accounts
        self.queue_name = queue
        self.dispositions = list(dispositions)
        self.clock = clock
        self.ami: Ami | None = None
        self.asterisk = "connecting"
        self._streams: dict[str, set[asyncio.Queue]] = {}
        self._wanted: dict[str, tuple[str, str | None]] = {}   # agent -> state asked for
        self._held: list[dict] | None = None       # events held during a resync
        self._wrap_up: dict[str, str] = {}         # agent -> call id awaiting a wrap-up
        # Calls answered, and calls whose leaving is recorded: the latest only (a desk runs
        # for months; a call's events come within its hour).
        self._answered = Recent(RECENT_CALLS)
        self._left = Recent(RECENT_CALLS)
        self._member_changed = asyncio.Event()
        self._callbacks: list[dict] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._callbacks_changed = False
        self._queue_dirty = False
        self._background = Background(log, "desk")
        self._pusher: asyncio.Task | None = None

    # --- lifecycle

    def attach(self, ami: Ami) -> None:
        self.ami = ami

    async def start(self) -> None:
        self._pusher = asyncio.get_running_loop().create_task(self._push_queue_updates())

    async def stop(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        await self._background.stop(self._pusher)

    def _spawn(self, coro: Awaitable[Any], what: str) -> None:
        self._background.spawn(coro, what)

    # --- from Asterisk

    def on_state(self, state: str, detail: str = "") -> None:
        self.asterisk = state
        self._broadcast("asterisk", {"state": state, "detail": detail})

    def resync(self, snapshot: Callable[[str], Awaitable[list[dict]]]) -> None:
        """After every (re)connection: rebuild the board from Asterisk's own snapshot.
        Events that arrive meanwhile are held and applied after it, so none is lost."""
        if self._held is None:
            self._held = []
            self._spawn(self._resync(snapshot), "resynchronising with Asterisk")

    async def _resync(self, snapshot: Callable[[str], Awaitable[list[dict]]]) -> None:
        try:
            events = await snapshot(self.queue_name)
        except BaseException:
            for event in self._held or []:
                self._apply(event)
            self._held = None
            # the board is not Asterisk's until a snapshot is had: try again while up
            self._later(RESYNC_RETRY_SECONDS, self._resync_again, snapshot)
            raise
        held, self._held = self._held or [], None
        self.load_snapshot(events)
        for event in held:
            self._apply(event)
        log.info("desk: resynchronised with Asterisk: %d waiting, %d agents in the queue",
                 len(self.board.waiting()), len(self.board.members()))
        self._restore_presence()

    def _resync_again(self, snapshot: Callable[[str], Awaitable[list[dict]]]) -> None:
        if self.asterisk == "up":
            self.resync(snapshot)

    def load_snapshot(self, events: list[dict]) -> None:
        """The board rebuilt from Asterisk's QueueStatus; everyone's view refreshed."""
        self.board.reset()
        for event in events:
            self.board.apply(event)
        for agent in list(self._wrap_up):
            member = self.board.members().get(agent)
            if member is None or not (member.paused and member.pause_reason == WRAP_UP):
                self._wrap_up.pop(agent)
        self._queue_dirty = True
        for agent in self._streams:
            self._send(agent, "me", self.me(agent))

    def _restore_presence(self) -> None:
        """Agents who asked to be ready or paused but are no longer in the queue (Asterisk
        restarted and forgot its dynamic members) are put back as they asked."""
        for agent, (state, reason) in list(self._wanted.items()):
            if agent not in self.board.members():
                log.info("desk: putting %s back in the queue (%s)", agent, state)
                self._spawn(self.set_state(agent, state, reason), f"restoring {agent}")

    def on_event(self, event: dict) -> None:
        if self._held is not None:
            self._held.append(event)
            return
        self._apply(event)

    def _apply(self, event: dict) -> None:
        name = event.get("Event", "")
        for change in self.board.apply(event):
            self._on_change(change, event)
        if event.get("Queue") == self.queue_name:
            self._record_queue_history(name, event)
        elif name == "UserEvent" and event.get("UserEvent") == "IvrHangup":
            self._hung_up_waiting(event)

    def _hung_up_waiting(self, event: dict) -> None:
        """A caller of the waiting loop hung up (the dialplan's IvrHangup report, Route
        still one that waits): abandoned, unless an agent answered. The loop's Queue() rounds end
        with QueueCallerAbandon at every announcement, so those events cannot say it."""
        call_id = event.get("CallId", "")
        if event.get("Route") not in WAITING_ROUTES or not call_id or call_id in self._answered:
            return
        self._left.add(call_id)
        self._spawn(self.store.queue_left(call_id, "abandoned", now_iso()), "queue history")

    def _on_change(self, change: Change, event: dict) -> None:
        agent, call_id = change.agent, change.call_id
        if change.kind == "queue":
            self._queue_dirty = True
        elif change.kind == "ringing" and agent and call_id:
            entry = change.entry or self.board.entry(call_id)
            if entry is not None and entry.verified and entry.card:
                self._spawn(self.store.set_card(call_id, entry.card), "keeping the card")
            self._send(agent, "ringing", {"call_id": call_id, **self._summary(entry),
                                          **_asterisk_time(event)})
            self._send(agent, "me", self.me(agent))
        elif change.kind == "ring_stopped" and agent:
            self._send(agent, "me", self.me(agent))
        elif change.kind == "connected" and agent and call_id:
            self._answered.add(call_id)
            self._spawn(self.store.queue_answered(call_id, agent, now_iso()), "queue history")
            self._send(agent, "connected", {"call_id": call_id})
            self._send(agent, "me", self.me(agent))
        elif change.kind == "ended" and agent and call_id:
            self._wrap_up[agent] = call_id
            self._spawn(self.store.queue_left(call_id, "answered", now_iso()), "queue history")
            self._spawn(self._pause_for_wrap_up(agent), "pausing for the wrap-up")
            self._send(agent, "ended", {"call_id": call_id})
            self._send(agent, "me", self.me(agent))
        elif change.kind == "member" and agent:
            self._member_changed.set()
            self._queue_dirty = True
            self._send(agent, "me", self.me(agent))

    def _record_queue_history(self, name: str, event: dict) -> None:
        call_id = self._call_id_of(event)
        if not call_id:
            return
        looping = bool((event.get("ChanVariables") or {}).get("IVR_QUEUE_JOINED"))
        if name == "QueueCallerJoin":
            # A caller of the waiting loop (or a callback) keeps the time of the first join.
            entry = self.board.entry(call_id)
            at = _iso(entry.joined_at) if looping and entry is not None else now_iso()
            kind = entry.kind if entry is not None else "caller"
            self._spawn(self.store.queue_joined(call_id, at, kind), "queue history")
        elif name == "QueueCallerAbandon" and not looping:
            self._left.add(call_id)
            self._spawn(self.store.queue_left(call_id, "abandoned", now_iso()), "queue history")
        elif name == "QueueCallerLeave":
            # Leave precedes AgentConnect when an agent answers: decide a moment later.
            self._later(RING_SETTLE_SECONDS, self._settle_ring, event.get("Uniqueid", ""))
            if not looping:
                # The waiting loop leaves the queue at every announcement: its route
                # records how the caller's wait ended (ivr/waiting/route.py).
                self._later(LEAVE_SETTLE_SECONDS, self._settle_leave, call_id, now_iso())

    def _later(self, delay: float, callback: Callable[..., None], *args) -> None:
        """``callback(*args)`` after ``delay`` s, unless the desk stops first."""
        def run() -> None:
            self._timers.discard(handle)
            callback(*args)
        handle = asyncio.get_running_loop().call_later(delay, run)
        self._timers.add(handle)

    def _settle_ring(self, uniqueid: str) -> None:
        for change in self.board.ring_settled(uniqueid):
            self._on_change(change, {})

    def _settle_leave(self, call_id: str, at: str) -> None:
        if call_id not in self._answered and call_id not in self._left:
            self._left.add(call_id)
            self._spawn(self.store.queue_left(call_id, "timeout", at), "queue history")

    @staticmethod
    def _call_id_of(event: dict) -> str:
        variables = event.get("ChanVariables") or {}
        return variables.get("IVR_CALL_ID") or event.get("Uniqueid", "")

    async def _pause_for_wrap_up(self, agent: str) -> None:
        account = self.accounts.get(agent)
        if account is None or self.ami is None:
            return
        await self.ami.action({"Action": "QueuePause", "Queue": self.queue_name,
                               "Interface": account.interface, "Paused": "true",
                               "Reason": WRAP_UP})

    # --- streams

    def subscribe(self, agent_id: str) -> asyncio.Queue:
        stream: asyncio.Queue = asyncio.Queue(STREAM_DEPTH)
        self._streams.setdefault(agent_id, set()).add(stream)
        return stream

    def unsubscribe(self, agent_id: str, stream: asyncio.Queue) -> None:
        streams = self._streams.get(agent_id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._streams[agent_id]

    def _send(self, agent_id: str, name: str, data: dict) -> None:
        for stream in self._streams.get(agent_id, ()):
            if stream.full():            # a page that does not read: drop its oldest event
                stream.get_nowait()
            stream.put_nowait((name, data))

    def _broadcast(self, name: str, data: dict) -> None:
        for agent_id in list(self._streams):
            self._send(agent_id, name, data)

    async def _push_queue_updates(self) -> None:
        while True:
            await asyncio.sleep(QUEUE_PUSH_SECONDS)
            if self._queue_dirty and self._streams:
                self._queue_dirty = False
                update = self.queue()
                if not self._callbacks_changed:      # the pages keep the list they have
                    del update["callbacks"]
                self._callbacks_changed = False
                self._broadcast("queue", update)

    # --- what the web service asks

    def me(self, agent_id: str) -> dict:
        account = self.accounts.get(agent_id)
        member = self.board.members().get(agent_id)
        state, reason, call_id = "offline", None, None
        if member is not None:
            if member.ringing:
                state, call_id = "ringing", member.ringing
            elif member.on_call:
                state, call_id = "on_call", member.on_call
            elif agent_id in self._wrap_up:
                state, call_id = "wrap_up", self._wrap_up[agent_id]
            elif member.paused:
                state, reason = "paused", member.pause_reason or None
            else:
                state = "ready"
        return {"agent": agent_id, "name": account.name if account else agent_id, "state": state,
                "pause_reason": reason, "call_id": call_id}

    def queue(self) -> dict:
        now = self.clock()
        waiting = [{"call_id": e.call_id, "position": e.position,
                    "waiting_s": max(0, round(now - e.joined_at)), "kind": e.kind,
                    "transfer_reason": e.transfer_reason or None, "verified": e.verified,
                    "member_status": e.member_status or None}
                   for e in self.board.waiting()]
        return {"waiting": waiting, "agents": self.board.counts(),
                "asterisk": self.asterisk, "callbacks": self._callbacks}

    def set_callbacks(self, callbacks: list[dict]) -> None:
        """The callbacks still to be made and those ended lately, with their attempts
        (the scheduler's ``board``): shown on the queue board under the waiting line.
        A stream's queue updates carry them only when they changed (up to 200 of them,
        they would weigh on every update of a busy line); /api/queue always does."""
        self._callbacks = callbacks
        self._callbacks_changed = self._queue_dirty = True

    async def logged_in(self, agent_id: str) -> None:
        self._send(agent_id, "me", self.me(agent_id))

    async def logged_out(self, agent_id: str) -> None:
        # Forgotten first: with Asterisk away now, a resync must not put the agent back.
        self._wanted.pop(agent_id, None)
        self._wrap_up.pop(agent_id, None)
        if self.board.members().get(agent_id) is not None and self.asterisk == "up":
            await self.set_state(agent_id, "offline", None)

    async def set_state(self, agent_id: str, state: str, reason: str | None) -> dict:
        if state not in STATES:
            raise DeskError(400, f"state must be one of {', '.join(STATES)}")
        if state == "paused" and reason not in PAUSE_REASONS:
            raise DeskError(400, f"a pause needs a reason: {', '.join(PAUSE_REASONS)}")
        if self.ami is None or self.asterisk != "up":
            raise DeskError(409, "the desk has lost Asterisk; presence cannot change now")
        account = self.accounts.get(agent_id)
        if account is None:
            raise DeskError(404, "no such agent")
        interface = account.interface
        member = self.board.members().get(agent_id)
        self._member_changed.clear()
        from .ami import AmiError, AmiUnavailable
        try:
            if state == "offline":
                self._wanted.pop(agent_id, None)
                self._wrap_up.pop(agent_id, None)
                if member is not None:
                    await self.ami.action({"Action": "QueueRemove", "Queue": self.queue_name,
                                           "Interface": interface})
            else:
                self._wanted[agent_id] = (state, reason)
                self._wrap_up.pop(agent_id, None)
                paused = state == "paused"
                if member is None:
                    await self.ami.action({"Action": "QueueAdd", "Queue": self.queue_name,
                                           "Interface": interface, "MemberName": agent_id,
                                           "Paused": "true" if paused else "false"})
                pause = {"Action": "QueuePause", "Queue": self.queue_name,
                         "Interface": interface, "Paused": "true" if paused else "false"}
                if paused:
                    pause["Reason"] = reason
                await self.ami.action(pause)
        except AmiUnavailable as exc:
            raise DeskError(409, f"Asterisk did not answer: {exc}") from None
        except AmiError as exc:
            raise DeskError(409, f"Asterisk refused: {exc}") from None
        await self._until_seen(agent_id, state, reason)
        view = self.me(agent_id)
        self._send(agent_id, "me", view)
        return view

    async def _until_seen(self, agent_id: str, state: str, reason: str | None) -> None:
        """Wait (briefly) until the board shows what was asked: Asterisk's events, not the
        action's reply, are the truth."""
        deadline = asyncio.get_running_loop().time() + CONFIRM_SECONDS
        while not self._shows(agent_id, state, reason):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._member_changed.clear()
            try:
                await asyncio.wait_for(self._member_changed.wait(), remaining)
            except TimeoutError:
                return

    def _shows(self, agent_id: str, state: str, reason: str | None) -> bool:
        member = self.board.members().get(agent_id)
        if state == "offline":
            return member is None
        if member is None:
            return False
        if state == "paused":
            return member.paused and member.pause_reason == reason
        return not member.paused

    def _handles(self, agent_id: str, call_id: str, queue: dict | None) -> bool:
        """The agent is rung for the call, on it, wrapping it up, or answered it: the one
        who may see its card and write its wrap-up (as long as that lasts, no longer)."""
        member = self.board.members().get(agent_id)
        return (member is not None and call_id in (member.ringing, member.on_call)
                or self._wrap_up.get(agent_id) == call_id
                or (queue or {}).get("answered_by") == agent_id)

    async def call_context(self, agent_id: str, call_id: str) -> dict:
        record = await self.store.get_record(call_id)
        queue = await self.store.get_queue(call_id)
        entry = self.board.entry(call_id)
        if record is None and queue is None and entry is None:
            raise DeskError(404, "no such call")
        await self.store.audit(agent_id, call_id, "view_context")
        record = record or {}
        verified = bool(record.get("verified") or (entry is not None and entry.verified))
        card = None
        if verified and self._handles(agent_id, call_id, queue):
            card = record.get("card") or (entry.card if entry is not None else None) or None
        if queue is not None and queue.get("result") is None and queue.get("waited_s") is None:
            queue = {**queue, "waited_s": _seconds_between(queue.get("joined_at"), now_iso())}
        elif queue is None and entry is not None:
            queue = {"joined_at": _iso(entry.joined_at),
                     "waited_s": round(self.clock() - entry.joined_at, 1),
                     "answered_by": None, "result": None}
        history = []
        if verified and record.get("participant_ref"):
            history = await self.store.history(record["participant_ref"], call_id)
        return {
            "call_id": call_id,
            "started_at": record.get("started_at"),
            "ended_at": record.get("ended_at"),
            "outcome": record.get("outcome"),
            "transfer_reason": record.get("transfer_reason")
            or (entry.transfer_reason if entry is not None else None) or None,
            "verified": verified,
            "card": card,
            "identifier_masked": record.get("identifier_masked"),
            "member_status": record.get("member_status")
            or (entry.member_status if entry is not None else None) or None,
            "menu_keys": record.get("menu_keys", []),
            "transcript": record.get("transcript", []),
            "ivr_seconds": _seconds_between(record.get("started_at"), record.get("ended_at")),
            "queue": queue,
            "wrapup": await self.store.get_wrapup(call_id),
            "history": history,
        }

    async def wrapup(self, agent_id: str, call_id: str, disposition: str, note: str) -> dict:
        if disposition not in self.dispositions:
            raise DeskError(400, "unknown disposition; one of: " + ", ".join(self.dispositions))
        if not isinstance(note, str) or len(note) > NOTE_LIMIT:
            raise DeskError(400, f"the note is longer than {NOTE_LIMIT} characters")
        queue = await self.store.get_queue(call_id)
        record = await self.store.get_record(call_id)
        if queue is None and record is None:
            raise DeskError(404, "no such call")
        if not self._handles(agent_id, call_id, queue):
            raise DeskError(403, "this call was not handled by this agent")
        saved = await self.store.put_wrapup(call_id, agent_id, disposition, note)
        if self._wrap_up.get(agent_id) == call_id:
            del self._wrap_up[agent_id]
            state, reason = self._wanted.get(agent_id, ("ready", None))
            if self.asterisk == "up":
                try:
                    await self.set_state(agent_id, state, reason)
                except DeskError as exc:
                    log.warning("desk: %s stays paused after the wrap-up: %s", agent_id,
                                exc.error)
        self._send(agent_id, "me", self.me(agent_id))
        return saved

    @staticmethod
    def _summary(entry: Entry | None) -> dict:
        if entry is None:
            return {}
        return {"kind": entry.kind, "transfer_reason": entry.transfer_reason or None,
                "verified": entry.verified, "member_status": entry.member_status or None}
