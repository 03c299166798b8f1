"""Asterisk through AMI: panoramisk's ``Manager`` behind a guard.

panoramisk 1.4 (notes/asterisk.md) reconnects forever on its own, never says that a login
failed, never checks the replies to its Pings, leaves an action in flight at a drop
unresolved (or sends it again after the next login), drops the connection when an event
handler raises, decodes each TCP chunk on its own (a UTF-8 character split across two
chunks is lost) and has no size limit. Here panoramisk keeps what it does well (the
connection set-up and Login request of its ``Manager``, actions with their ActionIDs and
futures) and ``AmiLink`` owns the rest:

- one supervisor task connects, logs in, watches and reconnects with a capped backoff;
  a refused login is the state ``auth_failed``, retried every ``reconnect_max`` seconds;
- a Ping watchdog: no reply within ``action_timeout`` ends the connection (half-open TCP);
- every action has a timeout, and a lost connection fails the actions in flight at once
  (``AmiUnavailable``); nothing is re-sent behind the caller's back;
- messages are framed on bytes, decoded whole, capped in size; an event handler that
  raises is logged and the link goes on;
- ``on_state(state, detail)`` on every change of state: "connecting" (started, never
  connected yet), "up" (logged in), "auth_failed", "down" (with the reason).

Events reach ``on_event`` as plain dicts of str, in the order Asterisk sent them, from the
event loop (keep the handler quick). Repeated ``ChanVariable`` / ``DestChanVariable``
headers become ``event["ChanVariables"]`` / ``event["DestChanVariables"]`` (name -> value).
After every login the state is "up" and the desk resynchronises with ``snapshot()``: events
sent while the link was down are lost.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Callable, Iterable

from panoramisk import Manager, actions
from panoramisk.ami_protocol import AMIProtocol

log = logging.getLogger(__name__)

# The channel variables the IVR leaves for the desk (manager.conf "channelvars").
IVR_VARIABLES = ("IVR_CALL_ID", "IVR_TRANSFER_REASON", "IVR_VERIFIED", "IVR_MEMBER_STATUS",
                 "IVR_CARD", "IVR_QUEUE_JOINED", "IVR_CALLBACK_ID")
BANNER = b"Asterisk Call Manager/"
# A real event is at most a few KB (a channel snapshot and its variables); anything larger
# is dropped whole, so a hostile or broken peer cannot make the buffer grow without bound.
MAX_MESSAGE_BYTES = 64 * 1024
_MAX_BANNER_BYTES = 256
_MESSAGE_END = re.compile(rb"\r?\n\r?\n")
_FAILED = {"error", "fail", "failure"}
_VARIABLE_HEADERS = {"ChanVariable": "ChanVariables", "DestChanVariable": "DestChanVariables"}
# Asterisk writes channel variables' values C-escaped (ast_escape_c_alloc).
_C_ESCAPE = re.compile(r"\\([abfnrtv\\'\"?])")
_C_UNESCAPED = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                "v": "\v"}
# The snapshot reads the variables of this many waiting channels at a time.
_GETVAR_CONCURRENCY = 20


class AmiUnavailable(Exception):
    """Not connected to Asterisk, no reply in time, or the connection was lost."""


class AmiError(Exception):
    """Asterisk answered ``Response: Error``; ``message`` is its Message header."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"{action}: {message}")
        self.action = action
        self.message = message


def parse_message(text: str) -> dict | None:
    """One AMI message (its lines, without the blank line that ends it) as a plain dict;
    None when it is neither a response nor an event. Empty values are kept; a header given
    twice keeps both values, one per line; channel variables become dicts (their values
    unescaped)."""
    message: dict = {}
    for line in text.split("\n"):
        name, colon, value = line.rstrip("\r").partition(":")
        if not colon or not name or " " in name:
            continue                      # not a header (the banner, garbage)
        if value.startswith(" "):
            value = value[1:]
        variables = _VARIABLE_HEADERS.get(name)
        if variables:
            var, _, var_value = value.partition("=")
            message.setdefault(variables, {})[var] = _C_ESCAPE.sub(
                lambda m: _C_UNESCAPED.get(m.group(1), m.group(1)), var_value)
        elif name in message:
            message[name] += "\n" + value
        else:
            message[name] = value
    if "Response" not in message and "Event" not in message:
        return None
    return message


def _check_action(action: dict) -> None:
    """Header injection guard: names and values are single lines."""
    if not isinstance(action.get("Action"), str) or not action["Action"]:
        raise ValueError("an AMI action needs an Action name")
    for name, value in action.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) or any(
                "\r" in str(v) or "\n" in str(v) for v in values):
            raise ValueError(f"AMI action header {name!r}: one line, no CR/LF")


class _Protocol(AMIProtocol):
    """panoramisk's protocol with its reading replaced: framing on bytes, a size cap, and
    no exception ever escaping ``data_received`` (asyncio would drop the connection)."""

    def __init__(self, link: "AmiLink") -> None:
        super().__init__()
        self.link = link

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._buffer = bytearray()
        self._skipping = False            # inside an oversized message: drop to its end
        self._reported = False

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._buffer += data
        if self.version is None and not self._read_banner():
            return
        while (end := _MESSAGE_END.search(self._buffer)) is not None:
            raw = bytes(self._buffer[:end.start()])
            del self._buffer[:end.end()]
            if self._skipping:
                self._skipping = False
            elif len(raw) > MAX_MESSAGE_BYTES:
                self._oversized(len(raw))
            elif raw:
                self._receive(raw)
            if self.closed:
                return
        if len(self._buffer) > MAX_MESSAGE_BYTES:
            if not self._skipping:
                self._oversized(len(self._buffer))
                self._skipping = True
            del self._buffer[:-3]         # a terminator may straddle the next chunk

    def _read_banner(self) -> bool:
        newline = self._buffer.find(b"\n")
        if newline < 0:
            if len(self._buffer) > _MAX_BANNER_BYTES:
                self._refuse_peer()
            return False
        line = bytes(self._buffer[:newline]).rstrip(b"\r")
        if not line.startswith(BANNER):
            self._refuse_peer()
            return False
        self.version = line[len(BANNER):].decode("ascii", "replace")
        del self._buffer[:newline + 1]
        return True

    def _refuse_peer(self) -> None:
        log.warning("AMI: the peer did not greet as an Asterisk manager; closing")
        self.drop("the peer is not an Asterisk manager")

    def _oversized(self, size: int) -> None:
        log.warning("AMI: dropped a message of over %d bytes (%d so far)", MAX_MESSAGE_BYTES,
                    size)

    def _receive(self, raw: bytes) -> None:
        try:
            message = parse_message(raw.decode("utf-8", "replace"))
            if message is not None:
                self._handle(message)
        except Exception:
            log.exception("AMI: a message could not be handled; the link goes on")

    def _handle(self, message: dict) -> None:
        action_id = message.get("ActionID")
        action = self.responses.get(action_id) if action_id else None
        if action is not None:
            self._collect(action, message)
        elif "Event" not in message or action_id:
            return    # a late reply, or an item of a list, for an action given up
        elif message["Event"].lower() == "shutdown":
            self.drop("Asterisk is shutting down")
        else:
            self.link._event(message)

    def _collect(self, action: actions.Action, message: dict) -> None:
        """The reply (or, for a list, the reply and its events to ``...Complete``)."""
        if not action.as_list:
            self._finish(action, message)
            return
        action.responses.append(message)
        if len(action.responses) == 1:
            if message.get("Response", "").lower() in _FAILED:
                self._finish(action, message)
            elif message.get("EventList", "").lower() != "start":
                self._finish(action, action.responses)       # no list follows
        elif (message.get("EventList", "").lower() == "complete"
              or message.get("Event", "").endswith("Complete")):
            self._finish(action, action.responses)

    def _finish(self, action: actions.Action, result) -> None:
        self.forget(action)
        if not action.future.done():
            action.future.set_result(result)

    def forget(self, action: actions.Action) -> None:
        for key in {action.id, action.action_id}:
            if self.responses.get(key) is action:
                del self.responses[key]

    def drop(self, reason: str) -> None:
        """End this connection now (the supervisor reconnects)."""
        if self.factory is not None:
            self.factory.drop(reason)
        else:
            self.transport.abort()

    def close(self) -> None:
        # Unlike panoramisk's, which queues unanswered actions to send them again after
        # the next login: whoever waits is told at once, and decides.
        pending = {id(a): a for a in self.responses.values()}.values()
        self.responses.clear()
        for action in pending:
            if not action.future.done():
                action.future.set_exception(AmiUnavailable("the connection to Asterisk was lost"))
        if not self.closed:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.close()
        if not self._reported:
            self._reported = True
            if self.factory is not None:
                self.factory.connection_lost(exc)


class _Manager(Manager):
    """One connection of panoramisk's Manager: it sends the Login, the link awaits the
    reply; it neither pings nor reconnects on its own; ``lost`` resolves with the reason
    the connection ended."""

    def __init__(self, link: "AmiLink", **config) -> None:
        super().__init__(protocol_factory=lambda: _Protocol(link), ping_delay=0,
                         ping_interval=0, reconnect_timeout=0, forgetable_actions=(),
                         **config)
        self.lost: asyncio.Future[str] = self.loop.create_future()

    def connection_made(self, f) -> None:
        if f.cancelled() or f.exception() is not None:
            return                        # the link reports it and retries
        super().connection_made(f)

    def login(self, future) -> None:
        self.authenticated_future = None  # the link reads the reply

    def ping(self) -> None:
        pass                              # the link's watchdog pings, and checks replies

    def dispatch(self, event) -> None:
        pass                              # not used: _Protocol hands events to the link

    def drop(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)
        if self.protocol is not None and not self.protocol.closed:
            self.protocol.transport.abort()

    def connection_lost(self, exc) -> None:
        self._connected = False
        if not self.lost.done():
            self.lost.set_result(f"connection lost: {exc}" if exc else
                                 "Asterisk closed the connection")


class _Down(Exception):
    pass


class _AuthFailed(Exception):
    pass


class AmiLink:
    """A guarded AMI connection that is kept up for as long as it runs (module doc)."""

    def __init__(self, host: str, port: int, username: str, secret: str, *,
                 on_event: Callable[[dict], None],
                 on_state: Callable[[str, str], None],
                 ping_interval: float = 5.0, action_timeout: float = 5.0,
                 reconnect_min: float = 0.5, reconnect_max: float = 10.0,
                 events: str = "agent") -> None:
        """``events``: the event classes asked for at login (queue events are "agent";
        add "call" for channel events)."""
        self.host, self.port, self.username = host, port, username
        self._secret = secret
        self._on_event, self._on_state = on_event, on_state
        self.ping_interval, self.action_timeout = ping_interval, action_timeout
        self.reconnect_min, self.reconnect_max = reconnect_min, max(reconnect_max, reconnect_min)
        self.events = events
        self.version = ""                 # AMI version from Asterisk's banner
        self._state, self.detail = "down", "not started"
        self._task: asyncio.Task | None = None
        self._manager: _Manager | None = None

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "AmiLink":
        return cls(settings.ami_host, settings.ami_port, settings.ami_user,
                   settings.ami_secret, **kwargs)

    @property
    def state(self) -> str:
        return self._state

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Returns at once; connects, and reconnects, in the background."""
        if self._task is not None:
            return
        if not self._secret:
            self._set_state("down", "no AMI secret configured (IVR_AMI_SECRET)")
            return
        self._set_state("connecting", self.address)
        self._task = asyncio.create_task(self._run(), name=f"ami-link {self.address}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_state("down", "stopped")

    # --- Actions

    async def action(self, action: dict) -> dict:
        """One action, its single reply. ``AmiError`` for ``Response: Error``,
        ``AmiUnavailable`` when not connected, lost, or no reply in ``action_timeout``."""
        return await self._call(action, as_list=False)

    async def action_list(self, action: dict) -> list[dict]:
        """An action answered by a list: its reply and the events up to ``...Complete``."""
        return await self._call(action, as_list=True)

    async def snapshot(self, queue: str, variables: Iterable[str] = IVR_VARIABLES
                       ) -> list[dict]:
        """The queue as Asterisk has it now, to resynchronise a board after a login:
        QueueStatus's QueueParams, QueueMember and QueueEntry events of ``queue``, each
        QueueEntry with ``ChanVariables`` read with Getvar (QueueEntry carries none)."""
        items = await self.action_list({"Action": "QueueStatus", "Queue": queue})
        events = [item for item in items[1:]
                  if item.get("Event") in ("QueueParams", "QueueMember", "QueueEntry")
                  and item.get("Queue") == queue]
        names = tuple(variables)
        limit = asyncio.Semaphore(_GETVAR_CONCURRENCY)

        async def read(entry: dict) -> None:
            async with limit:
                entry["ChanVariables"] = await self.channel_variables(
                    entry.get("Channel", ""), names)

        results = await asyncio.gather(
            *(read(e) for e in events if e["Event"] == "QueueEntry"), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return events

    async def channel_variables(self, channel: str, names: Iterable[str]) -> dict[str, str]:
        """Getvar of each name on ``channel``; what was read before the channel went away."""
        values: dict[str, str] = {}
        for name in names:
            try:
                reply = await self.action({"Action": "Getvar", "Channel": channel,
                                           "Variable": name})
            except AmiError:
                break                     # "No such channel": it left meanwhile
            values[name] = reply.get("Value", "")
        return values

    async def _call(self, action: dict, as_list: bool):
        _check_action(action)
        manager = self._manager
        if self._state != "up" or manager is None:
            raise AmiUnavailable(f"Asterisk is {self._state}: {self.detail}")
        reply = await self._request(manager, action, as_list)
        first = reply[0] if isinstance(reply, list) else reply
        if first.get("Response", "").lower() in _FAILED:
            raise AmiError(action["Action"], first.get("Message", "") or first["Response"])
        return reply

    async def _request(self, manager: _Manager, action: dict, as_list: bool,
                       timeout: float | None = None):
        protocol = manager.protocol
        if protocol is None or protocol.closed:
            raise AmiUnavailable("the connection to Asterisk was lost")
        sent = actions.Action(dict(action), as_list=as_list)
        future = manager.send_action(sent, as_list=as_list)
        timeout = self.action_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            protocol.forget(sent)
            raise AmiUnavailable(f"no reply to {action['Action']} within {timeout:g} s") from None

    # --- The supervisor

    async def _run(self) -> None:
        delay = self.reconnect_min
        while True:
            try:
                await self._session()
                wait = delay              # not reached: a session ends by raising
            except _AuthFailed as refused:
                self._set_state("auth_failed", f"login to {self.address} as {self.username} "
                                f"refused ({refused}); retrying every {self.reconnect_max:g} s")
                wait = self.reconnect_max
            except _Down as down:
                if self._state == "up":
                    delay = self.reconnect_min
                self._set_state("down", str(down))
                wait, delay = delay, min(delay * 2, self.reconnect_max)
            except Exception:
                log.exception("AMI: unexpected failure; reconnecting")
                self._set_state("down", "internal error (see the log)")
                wait, delay = delay, min(delay * 2, self.reconnect_max)
            await asyncio.sleep(wait)

    async def _session(self) -> None:
        """One connection: connect, log in, watch. Ends by raising _Down or _AuthFailed."""
        manager = _Manager(self, loop=asyncio.get_running_loop(), host=self.host,
                           port=self.port, username=self.username, secret=self._secret,
                           events=self.events)
        try:
            try:
                await asyncio.wait_for(manager.connect(), self.action_timeout)
            except TimeoutError:
                raise _Down(f"no answer from {self.address} within "
                            f"{self.action_timeout:g} s") from None
            except OSError as error:
                raise _Down(f"cannot connect to {self.address}: "
                            f"{error.strerror or error}") from None
            # Asterisk waits a second before it refuses a login.
            login = manager.authenticated_future
            try:
                reply = await asyncio.wait_for(login, self.action_timeout + 1.0)
            except (TimeoutError, AmiUnavailable):
                if manager.lost.done():
                    raise _Down(manager.lost.result()) from None
                raise _Down(f"no reply to Login within {self.action_timeout + 1.0:g} s"
                            ) from None
            if reply.get("Response", "").lower() != "success":
                raise _AuthFailed(reply.get("Message", "") or reply.get("Response", ""))
            self.version = manager.protocol.version or ""
            self._manager = manager
            self._set_state("up", f"logged in to {self.address} as {self.username} "
                                  f"(AMI {self.version})")
            watchdog = asyncio.create_task(self._watch(manager))
            try:
                reason = await manager.lost
            finally:
                watchdog.cancel()
            raise _Down(reason)
        finally:
            if self._manager is manager:
                self._manager = None
            manager.close()

    async def _watch(self, manager: _Manager) -> None:
        """Ping every ``ping_interval``; a connection that does not answer is dropped."""
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await self._request(manager, {"Action": "Ping"}, as_list=False)
            except AmiUnavailable:
                manager.drop(f"no reply to Ping within {self.action_timeout:g} s")
                return

    # --- Callbacks, contained

    def _set_state(self, state: str, detail: str) -> None:
        self.detail = detail
        if state == self._state:
            return
        self._state = state
        level = logging.INFO if state in ("up", "connecting") else logging.WARNING
        log.log(level, "AMI %s: %s", state, detail)
        try:
            self._on_state(state, detail)
        except Exception:
            log.exception("AMI: the state handler failed")

    def _event(self, event: dict) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("AMI: the event handler failed on %s; the link goes on",
                          event.get("Event"))
